"""Which ONNX Runtime execution providers parity is checked on: those that really run, not those requested.

ONNX Runtime silently falls back to the CPU when a requested provider cannot start (the GPU build
on a machine without a GPU or without CUDA libraries), so a provider counts only when the session
reports it first. Sessions come from the server's own factory (contracts.sessions), in strict
float32, so export checks exactly what the server will run.
"""
from __future__ import annotations

import logging
from pathlib import Path

import onnxruntime as ort

from contracts.sessions import (
    CPU,
    CUDA,
    DeviceUnavailable,
    RuntimeOptions,
    create_session,
)
from export.errors import CheckFailed

log = logging.getLogger(__name__)

__all__ = ["CPU", "CUDA", "ProviderUnavailable", "open_session", "parity_providers"]


class ProviderUnavailable(RuntimeError):
    pass


def open_session(model: str | Path | bytes, provider: str = CPU) -> ort.InferenceSession:
    """A session that runs on `provider` (CPU as the fallback for unsupported nodes), or ProviderUnavailable."""
    where = "the model" if isinstance(model, bytes) else str(model)
    options = RuntimeOptions(device="cuda" if provider == CUDA else "cpu", strict_float32=True)
    try:
        return create_session(model, options, model_name=where).session
    except DeviceUnavailable as exc:
        raise ProviderUnavailable(str(exc)) from exc
    except Exception as exc:  # onnxruntime's pybind errors (Fail, InvalidGraph, ...) share no useful base
        raise CheckFailed(f"ONNX Runtime {ort.__version__} cannot load {where} on {provider}: {exc}") from exc


def parity_providers(model: str | Path | bytes, cpu_only: bool = False) -> list[str]:
    """CPU always; CUDA too when this onnxruntime build has it and a session on `model` actually uses it."""
    providers = [CPU]
    if cpu_only or CUDA not in ort.get_available_providers():
        return providers
    try:
        open_session(model, CUDA)
    except (ProviderUnavailable, CheckFailed):  # a model that cannot load at all fails on the CPU, with its message
        log.info(
            "onnxruntime lists %s but it does not start here (no GPU, or missing CUDA/cuDNN libraries): "
            "parity is checked on the CPU only",
            CUDA,
        )
        return providers
    return providers + [CUDA]
