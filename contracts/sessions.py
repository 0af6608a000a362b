"""ONNX Runtime sessions: which execution provider, how many threads, and which provider really runs.

The one session factory of the project: the server and export's parity checks both open their
sessions here, so they agree on providers, options and how a CUDA fallback is reported.

ONNX Runtime silently falls back to the CPU when the CUDA provider cannot load (a missing library, no
GPU, a driver too old), and says why only in a burst of C++ log lines on stderr. Here the session is
created with that stderr captured, the provider that really runs is read back from the session,
and the reason for a fallback is condensed into one line that the server logs and reports in the
model metadata. `--device cuda` turns a fallback into an error instead.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import onnxruntime as ort

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# ORT's own log severity: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_ORT_LOG_ERROR = 3

# Concurrent runs per model when serving (Triton's default for ONNX Runtime models on the CPU): two
# runs side by side keep the cores busier than one run whose every operator waits for the slower of
# its threads (docs/performance.md).
SERVING_INSTANCES = 2

_preload_lock = threading.Lock()
_preload_done = False


class DeviceUnavailable(RuntimeError):
    """--device cuda, and CUDA does not really run the model."""


@dataclass(frozen=True)
class RuntimeOptions:
    device: str = "auto"
    # Threads ONNX Runtime uses inside one operator (0: automatic, see threads_per_run).
    intra_op_threads: int = 0
    # Runs of one session that may happen at once (the batcher's instances); they share the cores.
    instances: int = 1
    # Server processes sharing the machine's cores (--workers): each gets its share of them.
    workers: int = 1
    # Idle ORT worker threads spin for a while before sleeping. That buys a little latency on an
    # idle many-core machine but steals the cores the gRPC event loop needs on a small one, so
    # spinning is off by default for serving.
    allow_spinning: bool = False
    # TF32 rounds float32 matmul and convolution inputs to 10 bits of mantissa on Ampere and newer
    # GPUs; a parity check must see the graph's own float32 error, so it asks for strict float32.
    strict_float32: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0 (0 = automatic), got {self.intra_op_threads}")
        if self.instances < 1:
            raise ValueError(f"instances must be >= 1, got {self.instances}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def threads_per_run(self) -> int:
        """intra_op_num_threads for the session (0: ONNX Runtime's default, one per physical core).

        One instance in one process gets ORT's default. Otherwise the usable cores are split between
        every run that may happen at once (instances x workers), so that concurrent runs neither
        oversubscribe the cores nor queue on one shared pool; on two cores with two instances each
        run works on its own calling thread alone (no pool, no hand-offs between threads inside a run).
        """
        if self.intra_op_threads or self.instances * self.workers == 1:
            return self.intra_op_threads
        return max(1, usable_cpus() // (self.instances * self.workers))


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask (which taskset and cpusets narrow), and no more than
    its container's CPU limit rounded up (a Kubernetes limit of 2 CPUs on a 64-core node is 2)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, math.ceil(limit))) if limit is not None else cpus


def cgroup_cpu_limit(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """CPUs the cgroup (v2) may use per period, e.g. 1.5; None when unlimited or unknown."""
    try:
        quota, period = cpu_max.read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class SessionInfo:
    session: ort.InferenceSession
    # The provider that really runs the graph: the first of session.get_providers().
    provider: str
    # Why the provider is not the one asked for ("" when it is).
    provider_note: str


def requested_providers(device: str) -> list[str]:
    return [CPU] if device == "cpu" else [CUDA, CPU]


def _provider_options(providers: list[str], options: RuntimeOptions) -> list[dict]:
    return [{"use_tf32": "0"} if name == CUDA and options.strict_float32 else {} for name in providers]


def session_options(options: RuntimeOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = options.threads_per_run()
    # The graphs are a chain of operators: parallelism across operators buys nothing.
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    so.log_severity_level = _ORT_LOG_ERROR
    return so


def preload_cuda_libraries() -> str:
    """Let ONNX Runtime find the CUDA/cuDNN libraries pip installed (with torch, for instance).

    onnxruntime.preload_dlls() (onnxruntime-gpu >= 1.21) loads them from the nvidia-* wheels; it
    prints what it could not load, so its output is kept and returned for the debug log.
    """
    global _preload_done
    with _preload_lock:
        if _preload_done or not hasattr(ort, "preload_dlls"):
            return ""
        _preload_done = True
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            try:
                ort.preload_dlls()
            except Exception as exc:  # a failed preload only means CUDA will not load: said later
                print(f"onnxruntime.preload_dlls() failed: {exc}")
        return printed.getvalue()


@contextlib.contextmanager
def _captured_stderr() -> Iterator[io.StringIO]:
    """Capture what native code writes to file descriptor 2 (ORT's C++ logger writes there)."""
    captured = io.StringIO()
    try:
        stderr_fd = sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        stderr_fd = 2
    sys.stderr.flush()
    saved = os.dup(stderr_fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), stderr_fd)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, stderr_fd)
            os.close(saved)
            sink.seek(0)
            captured.write(sink.read().decode("utf-8", "replace"))


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LOAD_ERROR = re.compile(r"with error: (.+)")


def fallback_reason(ort_log: str) -> str:
    """One line saying why CUDA did not load, from ORT's log (the first error is the cause)."""
    text = _ANSI.sub("", ort_log)
    match = _LOAD_ERROR.search(text)
    if match:
        reason = match.group(1).strip()
    else:
        errors = [line for line in text.splitlines() if "[E:" in line or "Failed to create CUDAExecutionProvider" in line]
        reason = errors[0].split("]", 1)[-1].strip() if errors else "ONNX Runtime gave no reason"
    if sys.platform.startswith("linux") and not Path("/dev/nvidiactl").exists():
        reason += "; no NVIDIA GPU is visible (/dev/nvidiactl is missing)"
    return reason[:400]


def create_session(model: str | bytes | Path, options: RuntimeOptions, model_name: str) -> SessionInfo:
    """An InferenceSession on the requested device, with the provider that really runs it.

    `model_name` names the model in errors (the caller logs the provider line: log_provider).

    Raises DeviceUnavailable when --device cuda was asked for and CUDA does not run the model;
    lets ONNX Runtime's own errors (invalid model files) propagate for the caller to word.
    """
    providers = requested_providers(options.device)
    source = str(model) if isinstance(model, Path) else model
    so = session_options(options)
    note = ""
    if CUDA in providers and CUDA not in ort.get_available_providers():
        note = f"CUDA requested but unavailable: this onnxruntime build ({ort.__version__}) has no CUDA provider; install onnxruntime-gpu"
        providers = [CPU]
    if CUDA in providers:
        preload_log = preload_cuda_libraries()
        if preload_log:
            log.debug("onnxruntime.preload_dlls(): %s", preload_log.strip())
        with _captured_stderr() as ort_log:
            session = ort.InferenceSession(source, so, providers=providers,
                                           provider_options=_provider_options(providers, options))
        if ort_log.getvalue().strip():
            log.debug("ONNX Runtime while creating the session of %s:\n%s", model_name, ort_log.getvalue().strip())
        if session.get_providers()[0] != CUDA:
            note = f"CUDA requested but unavailable: {fallback_reason(ort_log.getvalue())}"
    else:
        session = ort.InferenceSession(source, so, providers=providers)

    provider = session.get_providers()[0]
    if options.device == "cuda" and provider != CUDA:
        raise DeviceUnavailable(
            f"model {model_name}: --device cuda, but ONNX Runtime runs it on {provider} ({note or 'CUDA did not load'}); "
            "install a CUDA-capable onnxruntime-gpu with matching CUDA/cuDNN libraries, or use --device auto|cpu"
        )
    return SessionInfo(session=session, provider=provider, provider_note=note)


def log_provider(model_name: str, info: SessionInfo) -> None:
    """The one line per model that says where it runs, and why not on the GPU when it was asked for."""
    if info.provider_note:
        log.info("model %s: running on %s (%s)", model_name, info.provider, info.provider_note)
    else:
        log.info("model %s: running on %s", model_name, info.provider)
