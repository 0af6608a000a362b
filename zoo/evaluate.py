"""`python -m zoo.evaluate CHECKPOINT`: re-measure a checkpoint on its test set.

A digit classifier is measured on the test split of the dataset it was trained on (or --dataset),
with the preprocessing recorded in the checkpoint; an edge model on the documents' example. The
result is compared with the figure the checkpoint recorded when it was trained.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from contracts.data_dir import DATA_DIR_ENV, DATA_DIR_HELP
from zoo.checkpoint import CheckpointError, load_checkpoint
from zoo.data import DATASETS, DataUnavailableError, InMemoryLoader, load_split
from zoo.layers import VERTICAL_EDGE_KERNEL
from zoo.models import get_model_spec
from zoo.preprocessing import Preprocessing
from zoo.train import (
    EDGE_DATASET,
    EVAL_BATCH_SIZE,
    edge_example,
    evaluate,
    format_kernel,
)

log = logging.getLogger(__name__)

EXIT_DATA_UNAVAILABLE = 1
EXIT_BAD_CHECKPOINT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zoo.evaluate",
        description="Re-measure a checkpoint written by `python -m zoo.train` on the test set and compare "
        "with the accuracy it recorded.",
        epilog=f"environment: {DATA_DIR_ENV} is the default --data-dir.  exit status: 0 measured, "
        "1 dataset unavailable, 2 bad arguments or unusable checkpoint",
    )
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="path of a checkpoint.pt")
    parser.add_argument("--dataset", choices=DATASETS, help="test set to measure on (default: the one the checkpoint records)")
    parser.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parser.add_argument("--no-download", dest="download", action="store_false", help="never download datasets")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run (default auto)")
    parser.add_argument("--batch-size", type=int, default=EVAL_BATCH_SIZE, help=f"images per batch (default {EVAL_BATCH_SIZE})")
    parser.add_argument("--test-limit", type=int, metavar="N", help="measure on the first N test images only (quick runs)")
    return parser


def evaluate_checkpoint(
    checkpoint_path: Path,
    dataset: str | None = None,
    data_dir: Path | None = None,
    download: bool = True,
    device: str = "cpu",
    batch_size: int = EVAL_BATCH_SIZE,
    test_limit: int | None = None,
) -> dict:
    """Measure a checkpoint; returns what was measured next to what the checkpoint recorded."""
    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.build_model().to(device)
    spec = get_model_spec(checkpoint.model_name)
    recorded = checkpoint.meta.get("metrics") or {}
    if not spec.is_classifier:
        X, Y = (tensor.to(device) for tensor in edge_example())
        with torch.no_grad():
            loss = float(((model(X) - Y) ** 2).sum())
        kernel = model.kernel.cpu()
        return {
            "model": spec.name,
            "dataset": EDGE_DATASET,
            "loss": loss,
            "recorded_loss": recorded.get("final_loss"),
            "kernel": kernel.tolist(),
            "max_kernel_error": float((kernel - torch.tensor(VERTICAL_EDGE_KERNEL)).abs().max()),
        }
    try:
        preprocessing = Preprocessing.from_meta(checkpoint.meta["preprocessing"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(
            f"{checkpoint_path} lacks the preprocessing record a classifier needs ({exc!r}): "
            "re-train it with `python -m zoo.train`"
        ) from None
    dataset = dataset or recorded.get("dataset") or "mnist"
    split = load_split(dataset, train=False, data_dir=data_dir, download=download).head(test_limit)
    evaluation = evaluate(model, InMemoryLoader(split, preprocessing, batch_size, device=device))
    return {
        "model": spec.name,
        "dataset": dataset,
        "test_images": len(split),
        "correct": evaluation.correct,
        "test_accuracy": evaluation.accuracy,
        "recorded_accuracy": recorded.get("test_accuracy"),
        "recorded_dataset": recorded.get("dataset"),
        "recorded_test_images": recorded.get("test_images"),
    }


def _report(result: dict) -> str:
    if "test_accuracy" not in result:
        line = (
            f"{result['model']}: loss {result['loss']:.4f} on the documents' edge example, kernel "
            f"{format_kernel(torch.tensor(result['kernel']))} (max error {result['max_kernel_error']:.4f} against [1, -1])"
        )
        if result["recorded_loss"] is not None:
            line += f"; recorded loss {result['recorded_loss']:.4f}"
        return line
    line = (
        f"{result['model']}: test accuracy {100 * result['test_accuracy']:.2f}% "
        f"({result['correct']}/{result['test_images']} {result['dataset']} test images)"
    )
    recorded = result["recorded_accuracy"]
    if recorded is None:
        return line + "; the checkpoint records no accuracy"
    same_set = result["recorded_dataset"] == result["dataset"] and result["recorded_test_images"] == result["test_images"]
    line += f"; recorded {100 * recorded:.2f}% ({result['recorded_test_images']} {result['recorded_dataset']} test images)"
    if same_set:
        line += f", difference {100 * (result['test_accuracy'] - recorded):+.2f} points"
    else:
        line += ", measured on a different test set"
    return line


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.test_limit is not None and args.test_limit < 1):
        parser.error("--batch-size and --test-limit must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device on this machine; use --device cpu (or auto)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        result = evaluate_checkpoint(
            args.checkpoint, args.dataset, args.data_dir, args.download, device, args.batch_size, args.test_limit
        )
    except CheckpointError as exc:
        log.error("%s", exc)
        return EXIT_BAD_CHECKPOINT
    except DataUnavailableError as exc:
        log.error("%s", exc)
        return EXIT_DATA_UNAVAILABLE
    print(_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
