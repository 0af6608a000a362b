"""PyTorch eager against ONNX Runtime (FP32, optimised graph, INT8) for each digit classifier.

    python -m bench.inference                 # every classifier, batches 1, 32, 256 (a few minutes)
    python -m bench.inference --quick         # lenet only, a few iterations (seconds: CI)
    python -m bench.inference --models lenet --batch-sizes 1 64 --seconds 5

For each model and batch size, every backend is timed call by call on the same MNIST test digits,
in interleaved rounds (PyTorch, FP32, optimised, INT8, then again in another order...), so that
other work on a shared machine slows them all alike; the ratios are measured in this one run.
PyTorch runs the very computation the ONNX graph holds (normalisation, model, softmax) under
torch.inference_mode with as many threads as ONNX Runtime. CPU always; CUDA rows are added when
ONNX Runtime really runs the CUDA execution provider (and PyTorch sees the GPU).

Writes bench/results/inference.json (the machine, the configuration and every row) and prints a
table. Exit status: 0 on success, 2 when it cannot run (missing data, unknown model, bad flags).
"""
from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from bench._machine import (
    describe_machine,
    finish_machine_record,
    machine_summary,
    usable_cores,
)
from bench._report import (
    RESULTS_DIR,
    Latency,
    format_table,
    ratio,
    result_document,
    run_and_report,
)
from contracts.data_dir import DATA_DIR_HELP, resolve_data_dir

log = logging.getLogger("bench.inference")

CLASSIFIERS = ("lenet", "lenet-modern", "lenet5-32")
BATCH_SIZES = (1, 32, 256)
PYTORCH = "pytorch eager"
CPU_DEVICE, CUDA_DEVICE = "cpu", "cuda"


@dataclass(frozen=True)
class InferenceBenchConfig:
    models: tuple[str, ...] = CLASSIFIERS
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    variants: tuple[str, ...] = ("fp32", "optimized", "int8")
    # Time each backend gets per model and batch size, split across `rounds` interleaved rounds.
    seconds_per_case: float = 2.0
    rounds: int = 5
    # Fewest timed calls per backend and round, however long they take.
    min_calls: int = 5
    threads: int = field(default_factory=usable_cores)
    # ONNX Runtime's default: idle intra-op threads spin briefly before sleeping (lower latency in-process).
    ort_spinning: bool = True
    cuda: bool = True  # add CUDA rows when CUDA really runs
    calibration_images: int = 1000
    runs_dir: Path = Path("runs")
    data_dir: Path | None = None
    output: Path = RESULTS_DIR / "inference.json"
    keep_models: Path | None = None  # keep the timed .onnx files here (else they go with a temporary folder)
    quick: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("name at least one model")
        if any(b < 1 for b in self.batch_sizes) or not self.batch_sizes:
            raise ValueError(f"batch sizes must be >= 1, got {list(self.batch_sizes)}")
        if self.seconds_per_case <= 0 or self.rounds < 1 or self.min_calls < 1:
            raise ValueError("--seconds must be > 0, --rounds and --min-calls >= 1")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.calibration_images < 1:
            raise ValueError(f"--calibration-images must be >= 1, got {self.calibration_images}")

    @classmethod
    def quick_mode(cls, **overrides) -> "InferenceBenchConfig":
        """Seconds, not minutes: one model, short rounds (CI keeps the script from rotting)."""
        values = dict(models=("lenet",), seconds_per_case=0.15, rounds=2, min_calls=3, calibration_images=200, quick=True)
        values.update(overrides)
        return cls(**values)


@dataclass
class Backend:
    """One way of running one model: a callable taking a float32 N x 1 x H x W batch."""

    name: str  # "pytorch eager", "onnxruntime fp32", ...
    variant: str  # "pytorch", "fp32", "optimized", "int8"
    device: str  # "cpu" | "cuda"
    provider: str  # what really runs it
    run: Callable[[np.ndarray], object]
    # Called before each round of this backend's calls (PyTorch's thread count is process-wide).
    prepare: Callable[[], None] | None = None


def torch_backends(module, threads: int, want_cuda: bool) -> list[Backend]:
    import torch

    module = module.eval()

    def run_cpu(pixels: np.ndarray):
        with torch.inference_mode():
            return module(torch.from_numpy(pixels))

    backends = [
        Backend(PYTORCH, "pytorch", CPU_DEVICE, f"torch {torch.__version__} CPU, {threads} threads", run_cpu,
                prepare=lambda: torch.set_num_threads(threads)),
    ]
    if threads > 1:
        # Context, not the baseline: one thread has no barrier to wait at when a core is taken.
        backends.append(
            Backend(f"{PYTORCH}, 1 thread", "pytorch-1-thread", CPU_DEVICE, f"torch {torch.__version__} CPU, 1 thread",
                    run_cpu, prepare=lambda: torch.set_num_threads(1))
        )
    if want_cuda and torch.cuda.is_available():
        import copy

        gpu_module = copy.deepcopy(module).cuda()

        def run_cuda(pixels: np.ndarray):
            # End to end, as a server would: host pixels in, host probabilities out (the copy synchronises).
            with torch.inference_mode():
                return gpu_module(torch.from_numpy(pixels).cuda())[1].cpu()

        backends.append(Backend(PYTORCH, "pytorch", CUDA_DEVICE, f"torch CUDA {torch.cuda.get_device_name()}", run_cuda))
    return backends


def ort_backends(files: dict[str, Path], input_name: str, config: InferenceBenchConfig, notes: list[str]) -> list[Backend]:
    """CPU sessions of every variant, and CUDA sessions where CUDA really runs them."""
    from contracts.sessions import (
        CUDA,
        DeviceUnavailable,
        RuntimeOptions,
        create_session,
    )

    cpu = RuntimeOptions(device="cpu", intra_op_threads=config.threads, allow_spinning=config.ort_spinning)
    cuda = RuntimeOptions(device="cuda", allow_spinning=config.ort_spinning)
    backends = []
    for variant, path in files.items():
        session = create_session(path, cpu, variant).session
        backends.append(_ort_backend(session, variant, CPU_DEVICE, input_name, config.threads))
    if not config.cuda:
        return backends
    for variant, path in files.items():
        try:
            info = create_session(path, cuda, variant)
        except DeviceUnavailable as exc:
            notes.append(f"no CUDA rows: {exc}".replace(f"model {variant}: ", ""))
            break
        except Exception as exc:  # a variant CUDA cannot load (fused CPU operators): a note, not a failure
            notes.append(f"{path.name} does not load on CUDA: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        if info.provider == CUDA:
            backends.append(_ort_backend(info.session, variant, CUDA_DEVICE, input_name, config.threads))
    return backends


def _ort_backend(session, variant: str, device: str, input_name: str, threads: int) -> Backend:
    provider = session.get_providers()[0]
    detail = f"{provider}, {threads} intra-op threads" if device == CPU_DEVICE else provider

    def run(pixels: np.ndarray):
        return session.run(None, {input_name: pixels})

    return Backend(f"onnxruntime {variant}", variant, device, detail, run)


def time_backends(backends: list[Backend], pixels: np.ndarray, config: InferenceBenchConfig) -> dict[int, list[float]]:
    """Per backend (by index), the seconds of every timed call, measured in interleaved rounds."""
    for backend in backends:  # warm-up: first calls allocate memory and pick kernels
        if backend.prepare:
            backend.prepare()
        deadline = time.perf_counter() + min(0.2, config.seconds_per_case / 4)
        for _ in range(3):
            backend.run(pixels)
        while time.perf_counter() < deadline:
            backend.run(pixels)
    seconds: dict[int, list[float]] = {i: [] for i in range(len(backends))}
    per_round = config.seconds_per_case / config.rounds
    clock = time.perf_counter
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of a timed call is noise, not the backend's cost
    try:
        for round_index in range(config.rounds):
            # Rotate the order so that no backend always runs first (or right after a slow one).
            order = list(range(len(backends)))
            shift = round_index % len(order)
            for index in order[shift:] + order[:shift]:
                backend = backends[index]
                if backend.prepare:
                    backend.prepare()
                    backend.run(pixels)  # not timed: the first call after a thread-count change pays for it
                run, samples = backend.run, seconds[index]
                stop_at = clock() + per_round
                calls = 0
                while calls < config.min_calls or clock() < stop_at:
                    started = clock()
                    run(pixels)
                    samples.append(clock() - started)
                    calls += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    return seconds


def benchmark_digits(data_dir: Path | None, count: int, input_size: tuple[int, int]) -> tuple[np.ndarray, str]:
    """MNIST test digits as graph inputs (random pixels, said so, when the files are missing)."""
    from contracts.digit_format import pixels_from_uint8
    from contracts.mnist_idx import load_mnist_test

    root = resolve_data_dir(data_dir)
    try:
        images, _ = load_mnist_test(root)
    except (OSError, ValueError) as exc:
        rng = np.random.default_rng(0)
        return rng.random((count, 1, *input_size), dtype=np.float32), f"random pixels (no MNIST test digits: {exc})"
    reps = -(-count // len(images))
    return pixels_from_uint8(np.tile(images, (reps, 1, 1))[:count], input_size), f"MNIST test digits from {root}"


def run_benchmark(config: InferenceBenchConfig) -> dict:
    from bench._models import prepare_model
    from zoo.models import get_model_spec

    machine = describe_machine()
    rows: list[dict] = []
    notes: list[str] = [
        "latency: one call on a batch (median and p99 of every timed call); images/s: batch size / mean latency",
        "vs PyTorch: images/s over PyTorch eager's (same device, model, batch and run); "
        "(median): PyTorch's median latency over this backend's, which a few slow calls do not move",
        f"threads: PyTorch (the baseline) and ONNX Runtime use {config.threads} intra-op threads each; on a busy "
        "machine a thread that loses its core stalls every parallel operator at its barrier, which is why "
        "'pytorch eager, 1 thread' is shown for context",
    ]
    largest = max(config.batch_sizes)
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        models_dir = config.keep_models or Path(tmp)
        for name in config.models:
            log.info("exporting %s (%s) ...", name, ", ".join(config.variants))
            input_size = tuple(get_model_spec(name).input_size)
            digits, digits_note = benchmark_digits(config.data_dir, largest, input_size)
            model = prepare_model(
                name, models_dir / name, config.runs_dir, config.data_dir, config.variants,
                config.calibration_images, check_pixels=digits[:64],
            )
            notes.extend(model.notes)
            notes.append(f"{name}: {model.weights} weights ({model.weights_detail}); inputs: {digits_note}")
            backends = torch_backends(model.torch_module, config.threads, config.cuda)
            backends += ort_backends(model.files, model.input_name, config, notes)
            for batch_size in config.batch_sizes:
                pixels = np.ascontiguousarray(digits[:batch_size])
                log.info("timing %s at batch %d on %d backends ...", name, batch_size, len(backends))
                seconds = time_backends(backends, pixels, config)
                rows.extend(_rows(name, model.weights, batch_size, backends, seconds))
    finish_machine_record(machine)
    config_record = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    return result_document("inference", machine, config_record, rows, list(dict.fromkeys(notes)))


def _rows(model: str, weights: str, batch_size: int, backends: list[Backend], seconds: dict[int, list[float]]) -> list[dict]:
    rows = []
    baselines: dict[str, tuple[float, float]] = {}  # device -> PyTorch's (images/s, median ms)
    for index, backend in enumerate(backends):
        latency = Latency.from_seconds(seconds[index])
        images_per_s = batch_size / (latency.mean_ms / 1000.0)
        if backend.variant == "pytorch":
            baselines[backend.device] = (images_per_s, latency.p50_ms)
        rows.append(
            {
                "model": model,
                "weights": weights,
                "backend": backend.name,
                "variant": backend.variant,
                "device": backend.device,
                "provider": backend.provider,
                "batch_size": batch_size,
                "median_ms": latency.p50_ms,
                "p99_ms": latency.p99_ms,
                "mean_ms": latency.mean_ms,
                "samples": latency.samples,
                "images_per_s": images_per_s,
            }
        )
    for row in rows:
        baseline = baselines.get(row["device"])
        row["baseline"] = f"{PYTORCH} ({row['device']})" if baseline else None
        row["vs_pytorch"] = ratio(row["images_per_s"], baseline[0]) if baseline else None
        row["vs_pytorch_median"] = ratio(baseline[1], row["median_ms"]) if baseline else None
    return rows


def render(document: dict) -> str:
    headers = ["model", "weights", "backend", "device", "batch", "median ms", "p99 ms", "images/s",
               "vs PyTorch", "vs PyTorch (median)"]
    times = lambda value: f"{value:.2f}x" if value is not None else "-"  # noqa: E731
    table_rows = [
        [
            row["model"], row["weights"], row["backend"], row["device"], row["batch_size"],
            row["median_ms"], row["p99_ms"], row["images_per_s"], times(row["vs_pytorch"]),
            times(row["vs_pytorch_median"]),
        ]
        for row in document["rows"]
    ]
    parts = [machine_summary(document["machine"]), "", format_table(headers, table_rows, right_from=4)]
    parts += ["", *(f"- {note}" for note in document["notes"])]
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    defaults = InferenceBenchConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.inference",
        description=__doc__.split("\n\n", 1)[0],
        epilog="Writes a table to stdout and the full result to --output (JSON).",
    )
    parser.add_argument("--models", nargs="+", help=f"digit classifiers to measure (default: {' '.join(defaults.models)}; "
                                                     "lenet with --quick)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(defaults.batch_sizes))
    parser.add_argument("--variants", nargs="+", default=list(defaults.variants), choices=["fp32", "optimized", "int8"],
                        help="ONNX files to time beside PyTorch")
    parser.add_argument("--seconds", type=float, default=defaults.seconds_per_case,
                        help="time each backend gets per model and batch size (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=defaults.threads,
                        help="threads of PyTorch and of ONNX Runtime (default: the usable cores, %(default)s)")
    parser.add_argument("--no-ort-spinning", action="store_true",
                        help="ONNX Runtime threads sleep at once when idle (what `python -m serve` does)")
    parser.add_argument("--no-cuda", action="store_true", help="CPU rows only, even with a GPU")
    parser.add_argument("--calibration-images", type=int, default=defaults.calibration_images)
    parser.add_argument("--runs-dir", type=Path, default=defaults.runs_dir,
                        help="trained checkpoints are RUNS_DIR/NAME/checkpoint.pt (else random weights)")
    parser.add_argument("--data-dir", type=Path, default=None, help=DATA_DIR_HELP)
    parser.add_argument("--output", type=Path, default=defaults.output, help="JSON result file (default: %(default)s)")
    parser.add_argument("--keep-models", type=Path, metavar="DIR",
                        help="keep the timed ONNX files in DIR/NAME/ (python -m bench.serve --model-file can serve them)")
    parser.add_argument("--quick", action="store_true", help="lenet only, a few iterations: seconds (for CI)")
    return parser


def config_from_args(args: argparse.Namespace) -> InferenceBenchConfig:
    values = dict(
        batch_sizes=tuple(args.batch_sizes),
        variants=tuple(dict.fromkeys(args.variants)),
        threads=args.threads,
        ort_spinning=not args.no_ort_spinning,
        cuda=not args.no_cuda,
        runs_dir=args.runs_dir,
        data_dir=args.data_dir,
        output=args.output,
        keep_models=args.keep_models,
    )
    if args.models:
        values["models"] = tuple(dict.fromkeys(args.models))
    if args.quick:
        return InferenceBenchConfig.quick_mode(**values)
    return InferenceBenchConfig(
        seconds_per_case=args.seconds, rounds=args.rounds, calibration_images=args.calibration_images, **values
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    log.setLevel(logging.INFO)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    from bench._models import BenchSetupError
    from export.errors import ExportError
    from zoo.models import UnknownModelError, get_model_spec, list_models

    not_classifiers = [name for name in config.models if name not in list_models() or not get_model_spec(name).is_classifier]
    if not_classifiers:
        parser.error(f"{', '.join(not_classifiers)}: not digit classifiers of the zoo; choose from {', '.join(CLASSIFIERS)}")
    return run_and_report("bench.inference", lambda: run_benchmark(config), render, config.output, (BenchSetupError, ExportError, UnknownModelError))


if __name__ == "__main__":
    sys.exit(main())
