"""`python -m zoo.train NAME`: train a zoo model; write its checkpoint, metrics and pictures.

Reads top to bottom like pytorch/examples' mnist/main.py: a `Config` filled from the command line,
`train_epoch()`, `evaluate()`, `main()`. The speed comes from the input pipeline: the dataset is
decoded once into a uint8 tensor and each batch is one indexing operation plus batched
preprocessing (`zoo.data.InMemoryLoader`), never per-image PIL work.

Under `torchrun --nproc-per-node N` the same command trains with DistributedDataParallel
(zoo.distributed): each process on its shard of the data, `--batch-size` the global batch, rank 0
alone evaluating and writing files.

The edge models (`edge`, `conv2d`) reproduce the documents' "Learning a Kernel" run instead:
plain gradient steps on the summed squared error between conv(X) and Y = corr2d(X, [1, -1]).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from contracts.calibration import softmax
from contracts.data_dir import DATA_DIR_ENV, DATA_DIR_HELP
from contracts.verdicts import VerdictThresholds
from zoo import distributed, plots
from zoo.calibration import (
    calibration_report,
    choose_thresholds,
    fit_temperature,
    refusal_summary,
)
from zoo.checkpoint import CHECKPOINT_FILENAME, Checkpoint, save_checkpoint
from zoo.data import (
    AUTO,
    DATASETS,
    HOLDOUT_SEED,
    UCI_DIGITS,
    DataUnavailableError,
    DigitSplit,
    InMemoryLoader,
    OutlierBatches,
    hold_out,
    load_train_test,
)
from zoo.layers import VERTICAL_EDGE_KERNEL, EdgeDetector
from zoo.models import (
    ModelSpec,
    UnknownModelError,
    get_model,
    get_model_spec,
    list_models,
)
from zoo.outliers import make_outliers
from zoo.preprocessing import Preprocessing
from zoo.recipes import (
    OPTIMIZERS,
    RECIPE_FIELDS,
    RECIPES,
    SCHEDULES,
    Recipe,
    epochs_for_small_dataset,
    recipe_for,
)
from zoo.run_folders import set_aside_previous_run

log = logging.getLogger(__name__)

EXIT_DATA_UNAVAILABLE = 1  # bad arguments exit with 2, through argparse
EXIT_INTERRUPTED = 130  # the shell's convention for a run stopped by Ctrl-C (128 + SIGINT)
DEFAULT_RUNS_DIR = Path("runs")
EVAL_BATCH_SIZE = 1000
# Measured on the 2-core machine the recipes were tuned on (bench/train.py prints it): LeNet's
# per-layer work at batch 128 is too small to split well, so 2 intra-op threads gained at most
# 1.3x on idle cores, while with another process on a core libgomp's spinning threads ran 5-10x
# slower than one.
DEFAULT_CPU_THREADS = 1
METRICS_FILENAME = "metrics.json"
EDGE_DATASET = "d2l-edge-6x8"
# A small training set (the UCI digits) gives at most this share of itself to the held-out split.
HOLDOUT_MAX_SHARE = 0.2
# Generated non-digits held out for the verdict thresholds; their seed is never a training pool's.
HELDOUT_OUTLIERS = 1000
HELDOUT_OUTLIER_SEED = 1_000_003
TRAINING_OUTLIER_SEED = 7  # the documents' X (6x8, a dark band in columns 2-5) and Y = corr2d(X, [1, -1])


@dataclass
class Config:
    model: str
    recipe: Recipe
    out: Path
    seed: int = 0
    device: str = "cpu"
    dataset: str = AUTO
    data_dir: Path | None = None
    download: bool = True
    threads: int | None = DEFAULT_CPU_THREADS  # None: torch's default (all cores)
    plots: bool = True
    progress: bool = False
    # For quick runs (tests, smoke checks): cut the data and the number of optimiser steps.
    train_limit: int | None = None
    test_limit: int | None = None
    max_steps: int | None = None
    # True when --epochs was given: the recipe's epochs are then never adjusted to the dataset.
    epochs_given: bool = False
    # This process among those torchrun started (one process unless torchrun set RANK and WORLD_SIZE).
    topology: distributed.Topology = field(default_factory=distributed.Topology)


@dataclass
class RunState:
    """What the run has left on disk so far: tells Ctrl-C which checkpoint is good."""

    checkpoint_path: Path
    checkpoint_saved: bool = False
    steps: int = 0


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # int64 (N,), on the CPU
    labels: torch.Tensor  # int64 (N,), on the CPU
    logits: torch.Tensor  # float32 (N, classes), on the CPU

    @property
    def correct(self) -> int:
        return int((self.predictions == self.labels).sum())


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int
    seconds: float  # wall clock
    cpu_seconds: float  # this process's CPU time: what the epoch costs on a machine shared with others


# --- Command line ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    recipes = "\n".join(f"  {name:<13} {_describe_recipe(recipe)}" for name, recipe in RECIPES.items())
    parser = argparse.ArgumentParser(
        prog="python -m zoo.train",
        description="Train a model of the zoo; write checkpoint.pt, metrics.json and PNG pictures to its\n"
        "output folder. The defaults are each model's tested recipe; flags override single fields.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"models: {', '.join(list_models())}\n\ndefault recipes:\n{recipes}\n\n"
        f"environment:\n  {DATA_DIR_ENV}  folder holding MNIST/raw (and FashionMNIST/raw); used when --data-dir "
        "is not given\n\ndistributed: torchrun --nproc-per-node N -m zoo.train NAME trains with DDP (gloo on CPU, "
        "NCCL on CUDA, one GPU per process); --batch-size is the global batch, split evenly over the processes"
        "\n\nexit status: 0 trained, 1 dataset unavailable, 2 bad arguments, 130 interrupted (Ctrl-C)",
    )
    parser.add_argument("model", metavar="NAME", help=f"model to train: {', '.join(list_models())}")
    recipe = parser.add_argument_group("recipe (defaults: the model's recipe, listed below)")
    recipe.add_argument("--epochs", type=int, help="passes over the training set (edge/conv2d: gradient steps)")
    recipe.add_argument("--batch-size", type=int, help="images per optimiser step (under torchrun: over all processes)")
    recipe.add_argument("--lr", type=float, help="peak learning rate")
    recipe.add_argument("--optimizer", choices=OPTIMIZERS, help="optimiser")
    recipe.add_argument("--momentum", type=float, help="SGD momentum")
    recipe.add_argument("--weight-decay", type=float, help="decoupled (AdamW) or L2 (SGD) weight decay")
    recipe.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule over all steps")
    recipe.add_argument("--warmup", type=float, help="fraction of the steps spent warming up (onecycle)")
    recipe.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing")
    recipe.add_argument("--max-shift", type=int, help="augmentation: translate each digit by up to this many pixels (0: off)")
    recipe.add_argument("--rotate", type=float, help="augmentation: rotate each image by up to this many degrees (0: off)")
    recipe.add_argument("--scale", type=float, help="augmentation: scale each image by up to this fraction (0: off)")
    recipe.add_argument("--shear", type=float, help="augmentation: shear each image by up to this many degrees (0: off)")
    recipe.add_argument("--stroke", type=float, help="augmentation: share of images made one pixel bolder or thinner")
    recipe.add_argument("--blur", type=float, help="augmentation: share of images blurred by a 3x3 Gaussian")
    recipe.add_argument("--noise", type=float, help="augmentation: standard deviation of added Gaussian noise")
    recipe.add_argument("--outlier-share", type=float, help="outlier exposure: non-digits per digit in each batch (0: off)")
    recipe.add_argument("--outlier-weight", type=float, help="outlier exposure: weight of the non-digits' loss")
    recipe.add_argument("--outlier-pool", type=int, help="outlier exposure: non-digit images drawn for the run")
    recipe.add_argument("--holdout", type=int, help="training images held out to fit the temperature and thresholds (0: none)")
    recipe.add_argument("--log-every", type=int, help="also log the training loss every N steps (0: only once per epoch)")

    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=0, help="random seed: same seed, same machine, same result (default 0)")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to train; auto: cuda when available (default auto)")
    run.add_argument(
        "--threads", type=int, default=DEFAULT_CPU_THREADS,
        help=f"CPU threads for torch's operators (default {DEFAULT_CPU_THREADS}: these models are too small "
        "to gain much from more, and extra threads collapse when other processes share the cores)",
    )
    run.add_argument(
        "--dataset", choices=(AUTO, *DATASETS), default=AUTO,
        help="digit classifiers' data. auto: MNIST, downloaded if missing; offline without a local copy, "
        "the UCI digits from scikit-learn. mnist: MNIST or fail (default auto)",
    )
    run.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    run.add_argument("--no-download", dest="download", action="store_false", help="never download datasets")
    run.add_argument("--out", type=Path, help="output folder (default runs/NAME)")
    run.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG pictures")

    quick = parser.add_argument_group("for quick runs (tests, smoke checks)")
    quick.add_argument("--train-limit", type=int, metavar="N", help="train on the first N training images only")
    quick.add_argument("--test-limit", type=int, metavar="N", help="evaluate on the first N test images only")
    quick.add_argument("--max-steps", type=int, metavar="N", help="stop after N optimiser steps in all")
    return parser


def _describe_recipe(recipe: Recipe) -> str:
    if recipe.loss == "squared-sum":
        return f"{recipe.epochs} steps, lr {recipe.lr:g}, plain gradient descent on the summed squared error"
    parts = [
        f"{recipe.epochs} epochs", f"batch {recipe.batch_size}", f"{recipe.optimizer} lr {recipe.lr:g}",
        f"{recipe.schedule}", f"wd {recipe.weight_decay:g}",
    ]
    if recipe.label_smoothing:
        parts.append(f"label smoothing {recipe.label_smoothing:g}")
    if recipe.max_shift:
        parts.append(f"shifts \u00b1{recipe.max_shift}px")
    augmentation = recipe.augmentation()
    if augmentation.active:
        parts.append("augmented (" + ", ".join(
            f"{name} {value:g}" for name, value in dataclasses.asdict(augmentation).items() if value) + ")")
    if recipe.outlier_share:
        parts.append(f"outlier exposure {recipe.outlier_share:g} x batch, weight {recipe.outlier_weight:g}")
    if recipe.holdout:
        parts.append(f"{recipe.holdout} held out for calibration")
    return ", ".join(parts)


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """The run's Config; usage errors exit with status 2 and a message, as argparse does."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        spec = get_model_spec(args.model)
        recipe = recipe_for(spec.name).with_overrides(
            **{name: getattr(args, name, None) for name in RECIPE_FIELDS}
        )
    except (UnknownModelError, ValueError) as exc:
        parser.error(str(exc))
    for flag in ("train_limit", "test_limit", "max_steps", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine; use --device cpu (or auto)")
    if not spec.is_classifier and args.dataset not in (AUTO,):
        parser.error(f"{spec.name} learns from the documents' edge example; --dataset applies to digit classifiers only")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    try:
        topology = distributed.topology_from_env()
        if topology.distributed:
            if not spec.is_classifier:
                raise ValueError(f"{spec.name} learns from one 6x8 example: train it in one process, without torchrun")
            distributed.per_process_batch_size(recipe.batch_size, topology)
            distributed.device_for(device, topology, torch.cuda.device_count())
    except (distributed.DistributedSetupError, ValueError) as exc:
        parser.error(str(exc))
    return Config(
        model=spec.name,
        recipe=recipe,
        epochs_given=args.epochs is not None,
        out=args.out if args.out is not None else DEFAULT_RUNS_DIR / spec.name,
        seed=args.seed,
        device=device,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        threads=args.threads,
        plots=args.plots,
        progress=sys.stderr.isatty(),
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        max_steps=args.max_steps,
        topology=topology,
    )


# --- Training and evaluation ----------------------------------------------------------------------

def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: nn.Module,
    run: RunState,
    max_steps: int | None = None,
    log_every: int = 0,
    progress=None,
    outliers: OutlierBatches | None = None,
    outlier_weight: float = 0.0,
) -> EpochStats:
    """One pass over `batches` (or fewer, when the run reaches `max_steps`).

    With `outliers`, each step also shows the model a batch of non-digits (in the same forward
    pass, so DDP sees one graph) and adds `outlier_weight` times their uniform cross-entropy.
    """
    model.train()
    started, cpu_started = time.perf_counter(), time.process_time()
    # Running sums stay on the device: no host sync per step.
    loss_sum = correct = None
    images = 0
    for pixels, labels in batches:
        if max_steps is not None and run.steps >= max_steps:
            break
        if outliers is None:
            logits = model(pixels)
            loss = criterion(logits, labels)
        else:
            both = model(torch.cat([pixels, outliers.draw()]))
            logits = both[: labels.shape[0]]
            loss = criterion(logits, labels) + outlier_weight * uniform_cross_entropy(both[labels.shape[0]:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        run.steps += 1
        batch = labels.shape[0]
        batch_loss = loss.detach().double() * batch
        batch_correct = (logits.detach().argmax(1) == labels).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        images += batch
        if log_every and run.steps % log_every == 0:
            log.info("step %d, loss %.4f", run.steps, loss.item())
        if progress is not None:
            progress.update(1)
            if run.steps % 20 == 0:
                progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if images == 0:
        return EpochStats(float("nan"), float("nan"), 0, seconds, cpu_seconds)
    return EpochStats(float(loss_sum) / images, int(correct) / images, images, seconds, cpu_seconds)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Evaluation:
    """Mean cross-entropy, accuracy and every prediction over `batches`, in eval mode."""
    model.eval()
    loss_sum, all_logits, labels_seen = 0.0, [], []
    for pixels, labels in batches:
        logits = model(pixels)
        loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
        all_logits.append(logits.float().cpu())
        labels_seen.append(labels.cpu())
    logits = torch.cat(all_logits)
    predicted = logits.argmax(1)
    truth = torch.cat(labels_seen)
    return Evaluation(loss_sum / len(truth), float((predicted == truth).double().mean()), predicted, truth, logits)


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Outlier exposure's loss: cross-entropy from the uniform distribution minus its entropy, log C.

    That is the KL divergence from the uniform distribution: the same gradients, and 0 for a flat
    output, so the logged training loss still reads as the digits' cross-entropy plus a penalty.
    """
    return -torch.log_softmax(logits, dim=1).mean() - math.log(logits.shape[1])


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    flat = labels.to(torch.int64) * num_classes + predictions.to(torch.int64)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def build_model(name: str, device: torch.device | str) -> nn.Module:
    """A fresh model of the zoo, laid out for training on `device`."""
    # oneDNN's channels-last kernels (pooling above all) are faster for these small convolutions:
    # 1.2-1.3x less CPU time per step for the LeNets, measured with one thread.
    return get_model(name).to(device, memory_format=torch.channels_last)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if recipe.schedule == "onecycle":
        # torch's OneCycleLR divides by the length of each phase: keep both at least 2 steps long
        # (this only matters for the tiny runs of tests and smoke checks).
        total_steps = max(total_steps, 4)
        warmup = min(max(recipe.warmup, 2.0 / total_steps), 0.5)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=total_steps, pct_start=warmup,
            cycle_momentum=recipe.optimizer == "sgd" and recipe.momentum > 0,
        )
    if recipe.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def first_convolution(model: nn.Module) -> torch.Tensor | None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.weight
    return None


def train_classifier(config: Config, spec: ModelSpec, run: RunState, device: torch.device) -> dict[str, Any]:
    """Train and evaluate; returns the metrics (under torchrun, only rank 0's hold more than the header)."""
    recipe = config.recipe
    topology = config.topology
    train_split, test_split = load_train_test(config.dataset, config.data_dir, config.download)
    # Held out of the whole training split before --train-limit cuts it: always the same images.
    heldout_split = None
    holdout = held_out_count(recipe.holdout, len(train_split))
    if holdout:
        train_split, heldout_split = hold_out(train_split, holdout)
    train_split, test_split = train_split.head(config.train_limit), test_split.head(config.test_limit)
    preprocessing = Preprocessing.for_model(spec.input_size, train_split.dataset)

    # Every process shuffles and shifts its own shard from its own stream; rank 0's is the one-process seed.
    generator = torch.Generator().manual_seed(config.seed + topology.rank)
    train_batches = InMemoryLoader(
        distributed.shard(train_split, topology), preprocessing,
        distributed.per_process_batch_size(recipe.batch_size, topology), shuffle=True, max_shift=recipe.max_shift,
        generator=generator, device=device, augment=recipe.augmentation(),
    )
    outlier_batches = None
    if recipe.outlier_share:
        pool = make_outliers(_pool_size(recipe.outlier_pool, config), seed=TRAINING_OUTLIER_SEED + config.seed)
        outlier_batches = OutlierBatches(
            torch.from_numpy(pool.images), train_batches,
            max(1, round(recipe.outlier_share * train_batches.batch_size)),
        )
    test_batches = InMemoryLoader(test_split, preprocessing, EVAL_BATCH_SIZE, device=device)
    if train_split.dataset == UCI_DIGITS and not config.epochs_given:
        scaled = epochs_for_small_dataset(recipe, len(train_batches))
        if scaled.epochs != recipe.epochs:
            log.info(
                "the UCI digits give %d steps an epoch against MNIST's 469: training %d epochs instead of %d "
                "(--epochs sets it)", len(train_batches), scaled.epochs, recipe.epochs,
            )
            recipe = config.recipe = scaled
    log.info(
        "%s on %s: %d training and %d test images, %s, device %s, %d threads%s",
        spec.name, train_split.dataset, len(train_split), len(test_split),
        _describe_recipe(recipe), device, torch.get_num_threads(),
        f"; {topology.world_size} processes (DDP), {len(train_batches.images)} images and batch "
        f"{train_batches.batch_size} each" if topology.distributed else "",
    )
    model = build_model(spec.name, device)
    trained = distributed.data_parallel(model, device, topology)
    optimizer = make_optimizer(model, recipe)
    total_steps = recipe.epochs * len(train_batches)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = make_scheduler(optimizer, recipe, total_steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    metrics = _metrics_header(config, spec, train_split, test_split)
    metrics["heldout_images"] = len(heldout_split) if heldout_split is not None else 0
    started = time.perf_counter()
    evaluation = None
    epochs_trained = 0
    progress = _progress_bar(total_steps, config.progress and topology.is_main, unit="step")
    try:
        for epoch in range(1, recipe.epochs + 1):
            if progress is not None:
                progress.set_description(f"epoch {epoch}/{recipe.epochs}")
            stats = train_epoch(
                trained, train_batches, optimizer, scheduler, criterion, run, config.max_steps, recipe.log_every, progress,
                outlier_batches, recipe.outlier_weight,
            )
            if stats.images == 0:
                break  # --max-steps reached at an epoch boundary
            epochs_trained += 1
            stats = _over_processes(stats, device, topology)
            if not topology.is_main:
                if _steps_exhausted(config, run):
                    break
                continue  # rank 0 evaluates and writes; the others go on to the next epoch's gradients
            eval_started = time.perf_counter()
            evaluation = evaluate(model, test_batches)
            entry = {
                "epoch": epoch,
                "train_loss": stats.loss,
                "train_accuracy": stats.accuracy,  # on the augmented batches, while learning
                "test_loss": evaluation.loss,
                "test_accuracy": evaluation.accuracy,
                "steps": run.steps,  # optimiser steps so far
                "lr": scheduler.get_last_lr()[0],
                "seconds": stats.seconds + (time.perf_counter() - eval_started),
                "train_seconds": stats.seconds,
                "train_cpu_seconds": stats.cpu_seconds,
                "train_images": stats.images,
                "images_per_second": stats.images / stats.seconds,
            }
            metrics["epochs"].append(entry)
            _save_classifier(config, spec, run, model, preprocessing, train_split, test_split, evaluation, epoch)
            metrics["total_seconds"] = time.perf_counter() - started
            metrics["test_accuracy"] = evaluation.accuracy
            _write_json(config.out / METRICS_FILENAME, metrics)
            log.info(
                "epoch %d/%d  loss %.4f  train %.2f%%  test %.2f%% (loss %.4f)  %.1f s  %s images/s",
                epoch, recipe.epochs, stats.loss, 100 * stats.accuracy, 100 * evaluation.accuracy,
                evaluation.loss, entry["seconds"], f"{entry['images_per_second']:,.0f}",
            )
            if _steps_exhausted(config, run):
                break
    finally:
        if progress is not None:
            progress.close()
    if epochs_trained == 0:
        raise ValueError("no training step ran: raise --max-steps or --train-limit")
    if not distributed.replicas_identical(model, topology):
        raise distributed.DistributedSetupError(
            f"the {topology.world_size} replicas ended with different parameters; the checkpoint holds rank 0's"
        )
    if not topology.is_main:
        return metrics
    if topology.distributed:
        log.info("%d processes: parameters identical on every rank after %d steps", topology.world_size, run.steps)

    calibrated = None
    if heldout_split is not None:
        calibrated = calibrate(model, preprocessing, heldout_split, evaluation, config, device)
        metrics["temperature"] = calibrated.temperature
        metrics["calibration"] = calibrated.calibration
        metrics["verdict_thresholds"] = calibrated.thresholds.to_meta()
        _save_classifier(config, spec, run, model, preprocessing, train_split, test_split, evaluation,
                         epochs_trained, calibrated)
        _log_calibration(calibrated)
    else:
        log.warning("no training images held out (--holdout 0): the checkpoint has no temperature and no verdict thresholds")

    pictures = []
    if config.plots:
        pictures = _plot_classifier(config, spec, model, metrics, test_split, evaluation, calibrated)
    total = metrics["total_seconds"]
    epochs_run = len(metrics["epochs"])
    train_seconds = sum(entry["train_seconds"] for entry in metrics["epochs"])
    images_per_second = sum(entry["train_images"] for entry in metrics["epochs"]) / train_seconds
    train_cpu_seconds = sum(entry["train_cpu_seconds"] for entry in metrics["epochs"])
    metrics["images_per_second"] = images_per_second
    metrics["images_per_cpu_second"] = sum(entry["train_images"] for entry in metrics["epochs"]) / train_cpu_seconds
    _write_json(config.out / METRICS_FILENAME, metrics)
    log.info(
        "%s: test accuracy %.2f%% (%d/%d %s test images) after %d epochs in %s (%.1f s/epoch, %s training "
        "images/s; %s per CPU-second)",
        spec.name, 100 * evaluation.accuracy, evaluation.correct, len(evaluation.labels), test_split.dataset,
        epochs_run, _duration(total), total / epochs_run, f"{images_per_second:,.0f}",
        f"{metrics['images_per_cpu_second']:,.0f}",
    )
    _log_files(config.out, [run.checkpoint_path, config.out / METRICS_FILENAME, *pictures])
    return metrics


def _steps_exhausted(config: Config, run: RunState) -> bool:
    return config.max_steps is not None and run.steps >= config.max_steps


def _metrics_header(config: Config, spec: ModelSpec, train_split: DigitSplit, test_split: DigitSplit) -> dict[str, Any]:
    return {
        "model": spec.name,
        "dataset": train_split.dataset,
        "train_images": len(train_split),
        "test_images": len(test_split),
        "recipe": config.recipe.to_meta(),
        "seed": config.seed,
        "device": config.device,
        "threads": torch.get_num_threads(),
        "processes": config.topology.world_size,
        "epochs": [],
    }


def _save_classifier(
    config: Config, spec: ModelSpec, run: RunState, model: nn.Module, preprocessing: Preprocessing,
    train_split: DigitSplit, test_split: DigitSplit, evaluation: Evaluation, epoch: int,
    calibrated: Calibrated | None = None,
) -> None:
    meta = _meta(
        config,
        labels=list(train_split.classes),
        preprocessing=preprocessing.to_meta(),
        metrics={
            "test_accuracy": evaluation.accuracy,
            "test_loss": evaluation.loss,
            "dataset": test_split.dataset,
            "test_images": len(test_split),
            "train_images": len(train_split),
            "epochs_completed": epoch,
        },
    )
    if calibrated is not None:
        meta.update(calibrated.to_meta())
    save_checkpoint(Checkpoint(spec.name, {}, model.state_dict(), meta), run.checkpoint_path)
    run.checkpoint_saved = True


def _meta(config: Config, labels: list[str], preprocessing: dict | None, metrics: dict[str, Any]) -> dict[str, Any]:
    import torchvision

    recipe = {**config.recipe.to_meta(), "seed": config.seed}
    if config.train_limit or config.max_steps:
        recipe.update(train_limit=config.train_limit, max_steps=config.max_steps)
    if config.topology.distributed:
        recipe.update(processes=config.topology.world_size)
    return {
        "labels": labels,
        "preprocessing": preprocessing,
        "metrics": metrics,
        "recipe": recipe,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _plot_classifier(
    config: Config, spec: ModelSpec, model: nn.Module, metrics: dict[str, Any], test_split: DigitSplit,
    evaluation: Evaluation, calibrated: Calibrated | None,
) -> list[Path]:
    title = f"{spec.name} on {test_split.dataset}"
    pictures = [
        plots.plot_training_curves(metrics["epochs"], config.out / "curves.png", title),
        plots.plot_confusion_matrix(
            confusion_matrix(evaluation.labels, evaluation.predictions, len(test_split.classes)),
            test_split.classes, config.out / "confusion.png",
            f"{title}: {100 * evaluation.accuracy:.2f}% of {len(evaluation.labels)} test images",
        ),
        plots.plot_misclassified(
            test_split.images, evaluation.labels, evaluation.predictions, test_split.classes,
            config.out / "misclassified.png",
        ),
    ]
    weight = first_convolution(model)
    if weight is not None:
        pictures.append(plots.plot_filters(weight, config.out / "filters.png", f"{spec.name}: first-layer filters"))
    if calibrated is not None:
        probabilities = softmax(evaluation.logits.numpy(), calibrated.temperature)
        pictures.append(plots.plot_risk_coverage(
            probabilities.max(axis=1), evaluation.predictions.numpy() == evaluation.labels.numpy(),
            calibrated.thresholds.min_confidence, config.out / "risk_coverage.png",
            f"{title}: risk-coverage of the calibrated top probability (T = {calibrated.temperature:.3f})",
        ))
    return pictures


# --- Calibration and verdict thresholds -----------------------------------------------------------

@dataclass
class Calibrated:
    temperature: float
    calibration: dict[str, Any]  # how T was fitted, ECE before and after, the thresholds' measurements
    thresholds: VerdictThresholds

    def to_meta(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "calibration": self.calibration,
            "verdict_thresholds": self.thresholds.to_meta(),
        }


def held_out_count(requested: int, train_images: int) -> int:
    """The recipe's held-out count, at most a fifth of a small training set (the UCI digits)."""
    return min(requested, int(train_images * HOLDOUT_MAX_SHARE)) if requested else 0


def _pool_size(requested: int, config: Config) -> int:
    # Quick runs on a few hundred images need no thousands of outliers.
    return min(requested, config.train_limit) if config.train_limit else requested


@torch.no_grad()
def _logits(model: nn.Module, pixels: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(chunk).float().cpu() for chunk in pixels.split(EVAL_BATCH_SIZE)]).numpy()


def calibrate(
    model: nn.Module, preprocessing: Preprocessing, heldout: DigitSplit, test: Evaluation, config: Config,
    device: torch.device,
) -> Calibrated:
    """Fit T on the held-out digits; choose the verdict thresholds on them and on held-out non-digits."""
    def model_input(images: torch.Tensor) -> torch.Tensor:
        return preprocessing.normalise(preprocessing.pixels(images.to(device)))

    heldout_logits = _logits(model, model_input(heldout.images))
    heldout_labels = heldout.labels.numpy()
    temperature = fit_temperature(heldout_logits, heldout_labels)
    outliers = make_outliers(_pool_size(HELDOUT_OUTLIERS, config), seed=HELDOUT_OUTLIER_SEED)
    outlier_logits = _logits(model, model_input(torch.from_numpy(outliers.images)))
    choice = choose_thresholds(
        softmax(heldout_logits, temperature), heldout_labels, softmax(outlier_logits, temperature)
    )
    test_logits, test_labels = test.logits.numpy(), test.labels.numpy()
    test_probabilities = softmax(test_logits, temperature)
    calibration = {
        "method": "temperature scaling: T minimising the NLL of softmax(logits / T) on held-out training images",
        "temperature": temperature,
        "heldout": {"dataset": heldout.dataset, "seed": HOLDOUT_SEED, **calibration_report(heldout_logits, heldout_labels, temperature)},
        "test": {"dataset": heldout.dataset, **calibration_report(test_logits, test_labels, temperature)},
        "thresholds": {
            "chosen_on": f"{len(heldout)} held-out digits and {len(outliers)} held-out generated non-digits (zoo.outliers)",
            "heldout": choice.summary,
            "test": refusal_summary(test_probabilities, test_labels, softmax(outlier_logits, temperature), choice.thresholds),
        },
    }
    return Calibrated(temperature, calibration, choice.thresholds)


def _log_calibration(calibrated: Calibrated) -> None:
    heldout, test = calibrated.calibration["heldout"], calibrated.calibration["test"]
    chosen = calibrated.calibration["thresholds"]
    log.info(
        "calibration: T = %.3f on %d held-out images; ECE (15 bins) held-out %.2f%% -> %.2f%%, test %.2f%% -> %.2f%%",
        calibrated.temperature, heldout["images"], 100 * heldout["ece_before"], 100 * heldout["ece_after"],
        100 * test["ece_before"], 100 * test["ece_after"],
    )
    thresholds = calibrated.thresholds
    log.info(
        "verdict thresholds: no digit below %.3f, unsure below %.3f or margin below %.3f; refused: held-out digits "
        "%.2f%%, test digits %.2f%%, held-out non-digits %.1f%% (AUROC %.4f)",
        thresholds.no_digit_below, thresholds.min_confidence, thresholds.min_margin,
        100 * chosen["heldout"]["digits_refused"], 100 * chosen["test"]["digits_refused"],
        100 * chosen["heldout"]["outliers_refused"], chosen["heldout"]["auroc_top_probability"],
    )


# --- The documents' edge example ----------------------------------------------------------------

def edge_example() -> tuple[torch.Tensor, torch.Tensor]:
    """X: 6x8 ones with a dark band in columns 2-5; Y: its vertical edges. Both (1, 1, H, W)."""
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    Y = EdgeDetector("vertical")(X)
    return X.reshape(1, 1, 6, 8), Y.reshape(1, 1, 6, 7)


def learn_kernel(config: Config, spec: ModelSpec, run: RunState) -> dict[str, Any]:
    recipe = config.recipe
    device = torch.device(config.device)
    X, Y = (tensor.to(device) for tensor in edge_example())
    model = get_model(spec.name).to(device)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, recipe.epochs)
    log.info("%s: learning the edge kernel from X %s and Y %s; %s", spec.name, tuple(X.shape), tuple(Y.shape), _describe_recipe(recipe))
    started = time.perf_counter()
    losses = []
    log_every = recipe.log_every or 1
    for iteration in range(1, recipe.epochs + 1):
        if config.max_steps is not None and run.steps >= config.max_steps:
            break
        loss = ((model(X) - Y) ** 2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        run.steps += 1
        losses.append(loss.item())
        if iteration % log_every == 0:
            log.info("iteration %d, loss %.3f", iteration, losses[-1])
    seconds = time.perf_counter() - started

    true_kernel = torch.tensor(VERTICAL_EDGE_KERNEL)
    kernel = model.kernel.cpu()
    bias = float(model.conv.bias.detach()) if getattr(model.conv, "bias", None) is not None else None
    kernel_error = float((kernel - true_kernel).abs().max())
    with torch.no_grad():
        final_loss = float(((model(X) - Y) ** 2).sum())
    metrics_summary = {
        "dataset": EDGE_DATASET,
        "final_loss": final_loss,
        "kernel": kernel.tolist(),
        "bias": bias,
        "true_kernel": true_kernel.tolist(),
        "max_kernel_error": kernel_error,
        "iterations": len(losses),
    }
    save_checkpoint(Checkpoint(spec.name, {}, model.state_dict(), _meta(config, [], None, metrics_summary)), run.checkpoint_path)
    run.checkpoint_saved = True
    metrics = {
        "model": spec.name, "recipe": recipe.to_meta(), "seed": config.seed, "device": config.device,
        "losses": losses, **metrics_summary, "total_seconds": seconds,
    }
    _write_json(config.out / METRICS_FILENAME, metrics)
    pictures = [plots.plot_kernel(kernel, true_kernel, losses, config.out / "kernel.png", bias)] if config.plots else []
    log.info(
        "%s: learned kernel %s%s (max error %.4f against [1, -1]), final loss %.4f after %d iterations",
        spec.name, format_kernel(kernel), f", bias {bias:+.4f}" if bias is not None else "",
        kernel_error, final_loss, len(losses),
    )
    _log_files(config.out, [run.checkpoint_path, config.out / METRICS_FILENAME, *pictures])
    return metrics


def format_kernel(kernel: torch.Tensor) -> str:
    return "[" + "; ".join(", ".join(f"{value:+.4f}" for value in row) for row in kernel.tolist()) + "]"


# --- Files, progress and the entry point ---------------------------------------------------------

def _write_json(path: Path, payload: dict[str, Any]) -> None:
    # Written next to its final name then renamed, so a reader never sees half a file.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _log_files(folder: Path, paths: list[Path]) -> None:
    log.info("files in %s: %s", folder, ", ".join(path.name for path in paths))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(seconds, 60)
    return f"{int(minutes)}m{seconds:04.1f}s" if minutes else f"{seconds:.1f}s"


def _progress_bar(total: int, enabled: bool, unit: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True, leave=False)


def train(config: Config, run: RunState | None = None) -> dict[str, Any]:
    """Train as configured and write the run's files; returns the metrics (as in metrics.json)."""
    run = run or RunState(config.out / CHECKPOINT_FILENAME)
    spec = get_model_spec(config.model)
    topology = config.topology
    device = distributed.device_for(config.device, topology, torch.cuda.device_count())
    if topology.is_main:
        config.out.mkdir(parents=True, exist_ok=True)
    with _torch_settings(config), distributed.process_group(topology, device):
        if spec.is_classifier:
            return train_classifier(config, spec, run, device)
        return learn_kernel(config, spec, run)


def _over_processes(stats: EpochStats, device: torch.device, topology: distributed.Topology) -> EpochStats:
    """An epoch over every process's shard: loss, accuracy, images and CPU time of all; this one's wall time."""
    if not topology.distributed:
        return stats
    local = torch.tensor([stats.loss * stats.images, stats.accuracy * stats.images, stats.images, stats.cpu_seconds],
                         dtype=torch.float64, device=device)
    loss_sum, correct, images, cpu_seconds = distributed.sum_over_processes(local, topology).tolist()
    return EpochStats(loss_sum / images, correct / images, int(images), stats.seconds, cpu_seconds)


@contextlib.contextmanager
def _torch_settings(config: Config):
    """Seed, thread count and deterministic kernels for the run; the process gets its own back after."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    # cuBLAS needs this before its first use to give bitwise-reproducible matrix products.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(config.seed)
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    if config.topology.is_main:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    else:
        # Rank 0 reports the run; the others speak only of trouble, each naming its rank.
        logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s [rank {config.topology.rank}] %(message)s",
                            datefmt="%H:%M:%S")
    if config.topology.is_main:
        set_aside_previous_run(config.out, (CHECKPOINT_FILENAME, METRICS_FILENAME))
    run = RunState(config.out / CHECKPOINT_FILENAME)
    try:
        if config.progress:
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm():
                train(config, run)
        else:
            train(config, run)
    except KeyboardInterrupt:
        last = run.checkpoint_path if run.checkpoint_saved else "none (no epoch finished)"
        log.warning("interrupted; last good checkpoint: %s", last)
        return EXIT_INTERRUPTED
    except DataUnavailableError as exc:
        log.error("%s", exc)
        return EXIT_DATA_UNAVAILABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
