"""Model files given alone (--model): loaded, by name, each served as version 1 (serve.core.lifecycle)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from contracts.errors import ModelNotFound
from contracts.model_file import Model, ModelLoadError, find_model_files, load_model
from contracts.sessions import RuntimeOptions


class ModelRepository:
    """Model files given alone (--model), loaded, by name: served as version 1 (serve.core.lifecycle)."""

    def __init__(self, models: Sequence[Model]) -> None:
        self._models: dict[str, Model] = {}
        for model in models:
            if model.name in self._models:
                other = self._models[model.name]
                raise ModelLoadError(
                    f"two models are named {model.name!r}: {other.path} and {model.path}; serve one of them, "
                    "or rename a third-party file"
                )
            self._models[model.name] = model

    @classmethod
    def load(cls, paths: Iterable[Path], options: RuntimeOptions) -> "ModelRepository":
        files = find_model_files(paths)
        models = [load_model(path, options) for path in files]
        return cls(models)

    def __iter__(self):
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str, version: str = "") -> Model:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model {name!r}; this server has: {', '.join(self._models) or 'no models'}")
        if version and version != model.version:
            raise ModelNotFound(f"model {name!r} has no version {version!r}; it has version {model.version!r}")
        return model
