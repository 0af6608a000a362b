"""Export into a model repository: the next version of a model, and Triton's config.pbtxt beside it.

    REPO/NAME/config.pbtxt          platform, max_batch_size, dynamic batching, tensors (Triton's schema)
    REPO/NAME/<N>/model.onnx        the new version, with its card
    REPO/NAME/<N>/model.parity.json, model.test_data/

The version is written in a hidden folder (REPO/NAME/.N.staging, which no server reads) and takes
its number only once every file is written and its checks passed, in one rename: a server polling
the repository sees the whole version or nothing. A version that fails its checks is kept as
REPO/NAME/N.rejected (not a number, so never served) for inspection.
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.model_config import (
    CONFIG_FILE,
    DEFAULT_MODEL_FILE,
    ModelConfig,
    ModelConfigError,
    read_config,
    triton_config,
    write_config,
)
from contracts.model_file import Model, ModelLoadError, load_model
from contracts.repository_layout import next_version
from contracts.sessions import SERVING_INSTANCES, RuntimeOptions
from export.errors import ExportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RepositoryVersion:
    """Where one export's version goes: its staging folder, then its numbered one."""

    model_dir: Path
    number: int

    @classmethod
    def next(cls, repository: Path, model_name: str) -> "RepositoryVersion":
        model_dir = Path(repository) / model_name
        version = cls(model_dir, next_version(model_dir))
        if version.staging_dir.exists():
            shutil.rmtree(version.staging_dir)  # what an interrupted export left
        version.staging_dir.mkdir(parents=True)
        return version

    @property
    def staging_dir(self) -> Path:
        return self.model_dir / f".{self.number}.staging"

    @property
    def final_dir(self) -> Path:
        return self.model_dir / str(self.number)

    @property
    def rejected_dir(self) -> Path:
        return self.model_dir / f"{self.number}.rejected"

    @property
    def staged_model(self) -> Path:
        return self.staging_dir / DEFAULT_MODEL_FILE

    def publish(self) -> Path:
        """Write the model's config.pbtxt, then give the version its number; returns the model file."""
        write_model_config(self.staged_model, self.model_dir)
        os.replace(self.staging_dir, self.final_dir)
        log.info("version %d of %s is in the repository: %s", self.number, self.model_dir.name, self.final_dir)
        return self.final_dir / DEFAULT_MODEL_FILE

    def reject(self) -> Path:
        if self.rejected_dir.exists():
            shutil.rmtree(self.rejected_dir)
        os.replace(self.staging_dir, self.rejected_dir)
        return self.rejected_dir

    def discard(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def relocate(self, value: Any, into: Path) -> Any:
        """`value` (a report: dicts, lists, path strings) with the staging folder's paths moved `into` another."""
        staging = str(self.staging_dir)
        if isinstance(value, dict):
            return {key: self.relocate(item, into) for key, item in value.items()}
        if isinstance(value, list):
            return [self.relocate(item, into) for item in value]
        if isinstance(value, str) and value.startswith(staging):
            return str(into) + value[len(staging):]
        return value


def model_config_for(model: Model, existing: ModelConfig | None) -> ModelConfig:
    """Triton's config for the model file: tensors and batching from the graph, the operator's choices kept.

    A config already in the repository keeps its version policy, instance groups and batching delay
    (they are the operator's); name, platform, max_batch_size and the tensors always follow the file.
    """
    tensors = lambda specs: [(spec.name, spec.datatype, spec.shape) for spec in specs]  # noqa: E731
    config = triton_config(model.name, tensors(model.inputs), tensors(model.outputs), SERVING_INSTANCES)
    if existing is not None:
        if existing.HasField("version_policy"):
            config.version_policy.CopyFrom(existing.version_policy)
        if existing.instance_group:
            del config.instance_group[:]
            config.instance_group.extend(existing.instance_group)
        if existing.HasField("dynamic_batching") and config.HasField("dynamic_batching"):
            config.dynamic_batching.CopyFrom(existing.dynamic_batching)
        if existing.max_batch_size > 0 and config.max_batch_size > 0:
            config.max_batch_size = existing.max_batch_size
    return config


def write_model_config(model_path: Path, model_dir: Path) -> Path:
    """Write (or refresh) model_dir/config.pbtxt for the ONNX file at model_path."""
    try:
        model = load_model(model_path, RuntimeOptions(device="cpu"), name=model_dir.name)
    except ModelLoadError as exc:
        raise ExportError(f"the exported file cannot be served: {exc}") from exc
    path = model_dir / CONFIG_FILE
    existing = None
    if path.is_file():
        try:
            existing = read_config(path)
        except ModelConfigError as exc:
            raise ExportError(f"{exc}; fix or remove it, then export again") from exc
    write_config(model_config_for(model, existing), path)
    return path
