"""Checkpoints that carry everything needed to use the weights, loaded without executing pickles.

A checkpoint holds the model name and config (to rebuild it from the registry), the weights, and a
JSON `meta` dict: labels, preprocessing, measured accuracy, the recipe and library versions
(torchvision's "weights travel with their meta" idea). `torch.load(weights_only=True)` refuses any
pickle that would construct arbitrary objects, so a crafted file cannot run code on load.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.models import UnknownModelError, get_model

FORMAT = "digit-zoo-checkpoint/1"
CHECKPOINT_FILENAME = "checkpoint.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says which file and what to do."""


@dataclass
class Checkpoint:
    model_name: str
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        """Rebuild the registered model and load the weights strictly, in eval mode."""
        try:
            model = get_model(self.model_name, **self.model_config)
        except (UnknownModelError, TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint names a model this zoo cannot build: {exc}") from exc
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"checkpoint weights do not match model {self.model_name!r} "
                f"(config {self.model_config}): {exc}"
            ) from exc
        return model.eval()


def save_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike) -> Path:
    """Write atomically: a crash or Ctrl-C mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model_name": checkpoint.model_name,
        "model_config": checkpoint.model_config,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in checkpoint.state_dict.items()},
        # JSON text, so the meta is exactly what export copies into the ONNX file.
        "meta_json": json.dumps(checkpoint.meta, sort_keys=True),
    }
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            torch.save(payload, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist: train one with `python -m zoo.train NAME` "
            "or pass the path of an existing checkpoint.pt"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises retrying with weights_only=False, the one thing never to do with
        # an untrusted file; pass on only its specific reason (e.g. "unsupported GLOBAL posix.system").
        reasons = [line.strip().rstrip('.') for line in str(exc).splitlines() if "nsupported" in line]
        raise CheckpointError(
            f"{path} was refused by the safe loader: it holds objects other than tensors and plain "
            f"data, or is not a checkpoint at all{': ' + reasons[0] if reasons else ''}. "
            "Checkpoints written by `python -m zoo.train` always load; do not load this file another way "
            "unless you trust where it came from."
        ) from exc
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupted or truncated?): {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (found format {found!r})")
    try:
        meta = json.loads(payload["meta_json"])
        return Checkpoint(
            model_name=str(payload["model_name"]),
            model_config=dict(payload["model_config"]),
            state_dict=dict(payload["state_dict"]),
            meta=meta,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} is a damaged {FORMAT} checkpoint: missing or invalid {exc}") from exc


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
