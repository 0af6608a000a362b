"""Training throughput: zoo.train's in-memory pipeline against a plain torchvision DataLoader.

    python -m bench.train            # pipelines, then the full lenet recipe
    python -m bench.train --quick    # seconds: a few steps per pipeline

MNIST is read from --data-dir, else $ZOO_DATA_DIR, else ./data.

Part 1 trains the same LeNet (same seed, the default recipe's optimiser) for a fixed number of
steps fed by each pipeline, in the same process, and prints images per second and the ratio to
the in-memory pipeline. "loader only" iterates the batches without the model: the input
pipeline's own ceiling. Each measurement is repeated and the best kept, since the machine is
shared (compare ratios within one run, not absolute figures across runs).

Part 2 (not in --quick) runs `python -m zoo.train lenet`'s default recipe end to end and prints
its test accuracy, total time, time per epoch and training images per second.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from contracts.data_dir import DATA_DIR_HELP, resolve_data_dir  # noqa: E402
from zoo.data import InMemoryLoader, load_split  # noqa: E402
from zoo.preprocessing import Preprocessing  # noqa: E402
from zoo.recipes import recipe_for  # noqa: E402
from zoo.train import (  # noqa: E402
    DEFAULT_CPU_THREADS,
    build_model,
    make_optimizer,
    parse_args,
    train,
)

MODEL = "lenet"
WARMUP_STEPS = 5


def torchvision_loader(data_dir: Path, batch_size: int, workers: int, seed: int):
    """The pytorch/examples mnist pipeline: a PIL image per example, ToTensor and Normalize each."""
    from torchvision import datasets, transforms

    mean, std = Preprocessing.for_model((28, 28), "mnist").mean, Preprocessing.for_model((28, 28), "mnist").std
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    dataset = datasets.MNIST(str(data_dir), train=True, download=False, transform=transform)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
        generator=torch.Generator().manual_seed(seed), persistent_workers=workers > 0,
    )


def in_memory_loader(split, batch_size: int, max_shift: int, seed: int):
    preprocessing = Preprocessing.for_model((28, 28), "mnist")
    return InMemoryLoader(
        split, preprocessing, batch_size, shuffle=True, max_shift=max_shift, generator=torch.Generator().manual_seed(seed)
    )


def _batches(loader, steps: int):
    """`steps` batches, cycling through passes of the loader as needed."""
    produced = 0
    while True:
        for batch in loader:
            yield batch
            produced += 1
            if produced == steps:
                return


def loader_rate(loader, steps: int) -> float:
    for _ in _batches(loader, WARMUP_STEPS):
        pass
    images, started = 0, time.perf_counter()
    for _, labels in _batches(loader, steps):
        images += labels.shape[0]
    return images / (time.perf_counter() - started)


def training_rate(loader, steps: int, seed: int, threads: int) -> float:
    torch.manual_seed(seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = build_model(MODEL, "cpu").train()
    optimizer = make_optimizer(model, recipe_for(MODEL))
    criterion = nn.CrossEntropyLoss()
    images, started = 0, None
    try:
        for step, (pixels, labels) in enumerate(_batches(loader, steps + WARMUP_STEPS)):
            if step == WARMUP_STEPS:
                images, started = 0, time.perf_counter()
            loss = criterion(model(pixels), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += labels.shape[0]
    finally:
        torch.set_num_threads(previous_threads)
    return images / (time.perf_counter() - started)


def compare_pipelines(data_dir: Path, steps: int, repeats: int, seed: int, threads: int) -> None:
    recipe = recipe_for(MODEL)
    split = load_split("mnist", train=True, data_dir=data_dir, download=False)
    zoo_loader = in_memory_loader(split, recipe.batch_size, recipe.max_shift, seed)
    # (row name, batches, torch threads for the model)
    rows = [
        (f"in-memory uint8, shifts \u00b1{recipe.max_shift}px (zoo.train)", zoo_loader, threads),
        ("in-memory uint8, no augmentation", in_memory_loader(split, recipe.batch_size, 0, seed), threads),
        ("torchvision DataLoader, num_workers=0", torchvision_loader(data_dir, recipe.batch_size, 0, seed), threads),
        ("torchvision DataLoader, num_workers=2", torchvision_loader(data_dir, recipe.batch_size, 2, seed), threads),
    ]
    other_threads = 2 if threads == 1 else 1
    rows.append((f"zoo.train's pipeline, {other_threads} torch threads", zoo_loader, other_threads))
    results = {name: {"train": 0.0, "loader": 0.0} for name, _, _ in rows}
    for _ in range(repeats):  # rounds interleave the rows, so load changes hit them all alike
        for name, loader, row_threads in rows:
            if row_threads == threads:  # the loader alone does not depend on the model's threads
                results[name]["loader"] = max(results[name]["loader"], loader_rate(loader, steps))
            results[name]["train"] = max(results[name]["train"], training_rate(loader, steps, seed, row_threads))
    baseline = results[rows[0][0]]["train"]
    print(f"\n{MODEL}: {steps} steps of batch {recipe.batch_size}, {threads} torch thread(s) unless stated, best of {repeats}")
    print(f"{'pipeline':<48} {'train img/s':>12} {'loader only img/s':>18} {'zoo.train faster by':>20}")
    for name, rates in results.items():
        loader = f"{rates['loader']:,.0f}" if rates["loader"] else "-"
        print(f"{name:<48} {rates['train']:>12,.0f} {loader:>18} {baseline / rates['train']:>19.2f}x")


def full_recipe(data_dir: Path, out: Path, threads: int) -> None:
    config = parse_args([MODEL, "--data-dir", str(data_dir), "--dataset", "mnist", "--no-download",
                         "--out", str(out), "--no-plots", "--threads", str(threads)])
    metrics = train(config)
    epochs = metrics["epochs"]
    print(f"\n{MODEL}, default recipe ({len(epochs)} epochs, {config.recipe.optimizer} lr {config.recipe.lr:g}, batch {config.recipe.batch_size}):")
    print(f"  test accuracy    {100 * metrics['test_accuracy']:.2f}% on {metrics['test_images']} MNIST test images")
    print(f"  total time       {metrics['total_seconds']:.1f} s")
    print(f"  time per epoch   {metrics['total_seconds'] / len(epochs):.1f} s (training and test pass)")
    print(f"  images/s         {metrics['images_per_second']:,.0f} (training)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parser.add_argument("--quick", action="store_true", help="a few steps per pipeline and no full training: seconds")
    parser.add_argument("--steps", type=int, help="timed steps per pipeline (default 200, --quick 20)")
    parser.add_argument("--repeats", type=int, help="rounds over the pipelines, best kept (default 2, --quick 1)")
    parser.add_argument("--threads", type=int, default=DEFAULT_CPU_THREADS, help=f"torch threads (default {DEFAULT_CPU_THREADS}, as zoo.train)")
    parser.add_argument("--skip-full", action="store_true", help="only compare the pipelines")
    parser.add_argument("--out", type=Path, help="output folder of the full run (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    data_dir = resolve_data_dir(args.data_dir)
    torch.set_num_threads(args.threads)
    steps = args.steps or (20 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 2)
    try:
        load_split("mnist", train=False, data_dir=data_dir, download=False)
    except Exception as exc:
        parser.exit(1, f"bench/train.py needs MNIST: {exc}\n")
    compare_pipelines(data_dir, steps, repeats, args.seed, args.threads)
    if not (args.quick or args.skip_full):
        if args.out:
            full_recipe(data_dir, args.out, args.threads)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
                full_recipe(data_dir, Path(tmp), args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
