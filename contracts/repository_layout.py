"""A model repository on disk, in Triton's layout: what it holds, read without loading anything.

    REPO/
      lenet/
        config.pbtxt        optional: version policy, batching, instances (contracts.model_config)
        1/model.onnx
        2/model.onnx
      thirdparty/
        1/model.onnx

A model is a folder; its versions are the sub-folders with positive integer names; anything else
(hidden folders, `3.rejected`, files) is not a version. Which versions are served is the config's
version policy (the newest one by default).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from contracts.errors import ModelNotFound
from contracts.model_config import (
    CONFIG_FILE,
    ModelConfig,
    ModelConfigError,
    model_file_name,
    read_config,
    select_versions,
)

_VERSION = re.compile(r"^[1-9][0-9]{0,17}$")


@dataclass(frozen=True)
class FileStamp:
    """What tells a changed model file from the one loaded: its size and modification time."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> "FileStamp | None":
        try:
            stat = path.stat()
        except OSError:
            return None
        return cls(stat.st_size, stat.st_mtime_ns)


@dataclass
class ModelFolder:
    name: str
    path: Path
    config: ModelConfig | None
    # Why the config could not be used ("" when it could, or when there is none).
    config_error: str = ""
    # Every version folder, by number, with the model file it should hold.
    versions: dict[int, Path] = field(default_factory=dict)

    def wanted_versions(self) -> list[int]:
        """The versions to serve under the version policy, oldest first."""
        return select_versions(self.config, list(self.versions))


def model_names(root: Path) -> list[str]:
    """The model folders of a repository, by name."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def read_model_folder(root: Path, name: str) -> ModelFolder:
    path = Path(root) / name
    if "/" in name or name.startswith(".") or not path.is_dir():
        raise ModelNotFound(
            f"the model repository {root} has no model {name!r} (a folder {name}/ with version folders "
            f"such as {name}/1/model.onnx); it has: {', '.join(model_names(root)) or 'no models'}"
        )
    config, error = None, ""
    config_path = path / CONFIG_FILE
    if config_path.is_file():
        try:
            config = read_config(config_path)
        except ModelConfigError as exc:
            error = str(exc)
    file_name = model_file_name(config)
    versions = {
        int(child.name): child / file_name
        for child in path.iterdir()
        if child.is_dir() and _VERSION.match(child.name)
    }
    return ModelFolder(name, path, config, error, versions)


def next_version(model_path: Path) -> int:
    """The number the next version of the model in `model_path` gets: one above every existing one."""
    if not model_path.is_dir():
        return 1
    numbers = [int(child.name) for child in model_path.iterdir() if _VERSION.match(child.name)]
    return max(numbers, default=0) + 1
