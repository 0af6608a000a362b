"""Which ONNX Runtime execution providers parity is checked on: those that really run, not those requested.

ONNX Runtime silently falls back to the CPU when a requested provider cannot start (the GPU build
on a machine without a GPU or without CUDA libraries), so a provider counts only when the session
reports it first in `get_providers()`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

from export.errors import CheckFailed
from serve.core.sessions import preload_cuda_libraries

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# TF32 rounds float32 matmul and convolution inputs to 10 bits of mantissa on Ampere and newer GPUs.
# A parity check must see the graph's own float32 error, so it runs CUDA in strict float32.
STRICT_PROVIDER_OPTIONS = {CUDA: {"use_tf32": "0"}}
# ONNX Runtime's default logger level (warning); restored after a quiet probe.
ORT_DEFAULT_LOG_SEVERITY = 2
ORT_FATAL_ONLY = 4


class ProviderUnavailable(RuntimeError):
    pass


def open_session(model: str | Path | bytes, provider: str = CPU, quiet: bool = False) -> ort.InferenceSession:
    """A session that runs on `provider` (CPU as the fallback for unsupported nodes), or ProviderUnavailable."""
    requested = [(provider, STRICT_PROVIDER_OPTIONS.get(provider, {}))]
    if provider != CPU:
        requested.append((CPU, {}))
    model_arg = model if isinstance(model, bytes) else str(model)
    if quiet:
        # A missing CUDA library is logged as an error by ORT before it falls back; in a probe it is expected.
        ort.set_default_logger_severity(ORT_FATAL_ONLY)
    try:
        session = ort.InferenceSession(
            model_arg,
            providers=[name for name, _ in requested],
            provider_options=[options for _, options in requested],
        )
    except Exception as exc:  # onnxruntime's pybind errors (Fail, InvalidGraph, ...) share no useful base
        where = "the model" if isinstance(model, bytes) else str(model)
        raise CheckFailed(f"ONNX Runtime {ort.__version__} cannot load {where} on {provider}: {exc}") from exc
    finally:
        if quiet:
            ort.set_default_logger_severity(ORT_DEFAULT_LOG_SEVERITY)
    if session.get_providers()[0] != provider:
        raise ProviderUnavailable(f"{provider} was requested but the session runs on {session.get_providers()[0]}")
    return session


def parity_providers(model: str | Path | bytes, cpu_only: bool = False) -> list[str]:
    """CPU always; CUDA too when this onnxruntime build has it and a session on `model` actually uses it."""
    providers = [CPU]
    if cpu_only or CUDA not in ort.get_available_providers():
        return providers
    # The same step the server takes: pip-installed CUDA/cuDNN libraries are found only once preloaded,
    # so without it parity would skip a GPU that the server then uses.
    preload_log = preload_cuda_libraries()
    if preload_log:
        log.debug("onnxruntime.preload_dlls(): %s", preload_log.strip())
    try:
        open_session(model, CUDA, quiet=True)
    except (ProviderUnavailable, CheckFailed):  # a model that cannot load at all fails on the CPU, with its message
        log.info(
            "onnxruntime lists %s but it does not start here (no GPU, or missing CUDA/cuDNN libraries): "
            "parity is checked on the CPU only",
            CUDA,
        )
        return providers
    return providers + [CUDA]
