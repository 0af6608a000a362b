"""python -m export NAME: a zoo model to ONNX, with its model card, test data and proven parity.

Files (named after -o FILE, default models/NAME.onnx):
  NAME.onnx              the graph, its model card in metadata_props
  NAME.parity.json       what was compared and the largest differences, per output and provider
  NAME.test_data/        test_data_set_0/input_0.pb, output_<i>.pb (the ONNX model zoo layout)
  NAME.opt.onnx          with --optimize: ONNX Runtime's offline-optimised graph
  NAME.int8.onnx         with --quantize int8: static INT8 (QDQ) model
With --repository REPO, the next version of the model in a Triton-layout repository instead:
  REPO/NAME/N/model.onnx, model.parity.json, model.test_data/   (N: one above the newest version)
  REPO/NAME/config.pbtxt  Triton's config for the file (its version policy, instances and batching
                          delay are kept when it exists), so the repository also loads in Triton
A file that fails its checks is kept as FILE.rejected (with NAME.rejected.parity.json) instead,
never under its real name. Variants carry their file name as model name (lenet.int8, lenet.opt),
so one server can load a whole models folder.

Exit status: 0 when every file passed its checks, 1 when a check failed (parity outside tolerance,
INT8 accuracy drop), 2 for a request that cannot be carried out (unknown model, missing, corrupted
or mismatched checkpoint, missing data, bad flags).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from contracts.data_dir import DATA_DIR_HELP
from export.config import DEFAULT_OUTPUT_DIR, ExportConfig
from export.errors import CheckFailed, ExportError
from export.onnx_export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from export.optimize import DEFAULT_LEVEL, LEVELS
from export.parity import DEFAULT_ATOL, DEFAULT_MIN_TOP1_AGREEMENT
from export.quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MAX_ACCURACY_DROP
from export.source import DEFAULT_RUNS_DIR, models_with_checkpoints
from zoo.models import list_models

log = logging.getLogger("export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description=__doc__.split("\n\n", 1)[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help=f"model to export: {', '.join(list_models())}")
    parser.add_argument("--all", action="store_true", help="export every model that has a checkpoint in --runs-dir")
    source = parser.add_argument_group("weights")
    source.add_argument("--checkpoint", type=Path, help="checkpoint to export (default: RUNS_DIR/NAME/checkpoint.pt)")
    source.add_argument("--runs-dir", type=Path, default=Path(DEFAULT_RUNS_DIR), help="where training runs are (default: %(default)s)")
    source.add_argument("--random-weights", action="store_true", help="export an untrained model (tests and benchmarks only)")
    source.add_argument("--seed", type=int, default=0, help="seed of random weights and random parity inputs (default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("-o", "--output", type=Path, help=f"model file (default: {DEFAULT_OUTPUT_DIR}/NAME.onnx)")
    output.add_argument("--output-dir", type=Path, default=Path(DEFAULT_OUTPUT_DIR), help="folder for NAME.onnx files (default: %(default)s)")
    output.add_argument("--repository", type=Path, metavar="REPO",
                        help="write the next version of the model into this model repository (Triton's layout)")
    output.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default: %(default)s)")
    checks = parser.add_argument_group("parity")
    checks.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    checks.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="largest allowed absolute difference of any output (default: %(default)g)")
    checks.add_argument(
        "--min-top1-agreement", type=float, default=DEFAULT_MIN_TOP1_AGREEMENT,
        help="smallest allowed top-1 agreement with torch, in percent (default: %(default)g)",
    )
    checks.add_argument("--cpu-only", action="store_true", help="check parity on the CPU provider only, even when CUDA works")
    variants = parser.add_argument_group("variants")
    variants.add_argument("--optimize", action="store_true", help="also save ONNX Runtime's offline-optimised graph as NAME.opt.onnx")
    variants.add_argument(
        "--optimize-level", choices=sorted(LEVELS), default=DEFAULT_LEVEL,
        help="basic: standard ONNX operators only; extended: ONNX Runtime fused operators (default: %(default)s)",
    )
    variants.add_argument("--quantize", choices=["int8"], help="also save a static INT8 (QDQ) model as NAME.int8.onnx")
    variants.add_argument(
        "--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
        help="training images INT8 calibration sees (default: %(default)s)",
    )
    variants.add_argument(
        "--max-accuracy-drop", type=float, default=DEFAULT_MAX_ACCURACY_DROP,
        help="largest allowed INT8 test accuracy drop, in percentage points (default: %(default)g)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return parser


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    if args.all == bool(args.name):
        raise ExportError("name one model to export, or pass --all (not both)")
    if args.all and (args.output or args.checkpoint):
        raise ExportError("--all exports several models: use --output-dir and --runs-dir instead of -o and --checkpoint")
    if args.repository is not None and args.output:
        raise ExportError("--repository names the file (REPO/NAME/N/model.onnx): drop -o")
    if args.atol < 0:
        raise ExportError(f"--atol must be at least 0, got {args.atol:g}")
    if not 0 <= args.min_top1_agreement <= 100:
        raise ExportError(f"--min-top1-agreement is a percentage in 0..100, got {args.min_top1_agreement:g}")
    if args.max_accuracy_drop < 0:
        raise ExportError(f"--max-accuracy-drop must be at least 0 points, got {args.max_accuracy_drop:g}")
    if args.calibration_images < 1:
        raise ExportError(f"--calibration-images must be at least 1, got {args.calibration_images}")
    if args.all:
        names = list_models() if args.random_weights else models_with_checkpoints(args.runs_dir)
        if not names:
            raise ExportError(
                f"no model has a checkpoint under {args.runs_dir}: train one with `python -m zoo.train NAME` "
                "(or pass --runs-dir)"
            )
    else:
        names = [args.name]
    return ExportConfig(
        model_names=names,
        all_models=args.all,
        checkpoint_path=args.checkpoint,
        runs_dir=args.runs_dir,
        output_path=args.output,
        output_dir=args.output_dir,
        repository=args.repository,
        opset=args.opset,
        random_weights=args.random_weights,
        seed=args.seed,
        data_dir=args.data_dir,
        atol=args.atol,
        min_top1_agreement=args.min_top1_agreement,
        cpu_only=args.cpu_only,
        optimize=args.optimize,
        optimize_level=args.optimize_level,
        quantize=args.quantize,
        calibration_images=args.calibration_images,
        max_accuracy_drop=args.max_accuracy_drop,
    )


def run(config: ExportConfig) -> int:
    """Export every requested model; the exit status of the worst outcome."""
    from export.pipeline import (
        export_model,  # heavy (torch, onnxruntime): imported after the flags are valid
    )

    status = 0
    for name in config.model_names:
        try:
            result = export_model(name, config)
        except (ExportError, CheckFailed) as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            status = max(status, exc.exit_code)
            continue
        print("\n\n".join(result.tables) + "\n")
        if result.failures:
            for failure in result.failures:
                print(f"FAILED: {name}: {failure}", file=sys.stderr)
            status = max(status, CheckFailed.exit_code)
        else:
            print(f"{name}: exported to {result.paths.model}, checks passed (report: {result.paths.parity_report})")
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    for package in ("export", "zoo"):
        logging.getLogger(package).setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        config = config_from_args(args)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
