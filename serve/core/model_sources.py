"""Where served models come from: a model repository folder, or model files given alone.

The lifecycle (serve.core.lifecycle) loads every model the same way, from a source that lists
model names, reads a model's folder (its config and version files, contracts.repository_layout)
and loads one version:

- `RepositoryFolder` is a --model-repository in Triton's layout (REPO/NAME/VERSION/model.onnx),
  re-read on SIGHUP and polling, loaded and unloaded on request in explicit mode.
- `ModelFiles` are the --model files (and the .onnx files of --model folders), each presented as
  a model of one version, "1", named by its card (the file stem for third-party models). They are
  loaded when the server is configured, so a missing file or two files of one name stop it before
  it opens a port, and they are never re-read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol, Sequence

from contracts.errors import ModelNotFound
from contracts.model_file import Model, ModelLoadError, find_model_files, load_model
from contracts.repository_layout import ModelFolder, model_names, read_model_folder
from contracts.sessions import RuntimeOptions


class ModelSource(Protocol):
    # Whether this is a model repository: what the control modes need to re-read and to load on request.
    from_repository: bool
    # What to do about a model that fails to load at start-up.
    remedy: str

    def check(self) -> None:
        """ModelLoadError when the source cannot be served at all."""

    def names(self) -> list[str]:
        """The models the source holds, by name; OSError when it cannot be read now."""

    def read(self, name: str) -> ModelFolder:
        """The model's config and version files; ModelNotFound when the source has no such model."""

    def load_version(self, folder: ModelFolder, version: str, runtime: RuntimeOptions) -> Model:
        """One version of the model, loaded (called on the loader thread); ModelLoadError when it cannot be."""


class RepositoryFolder:
    """A model repository in Triton's layout, read anew each time it is asked."""

    from_repository = True
    remedy = "fix the repository, or leave the model out of it"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def check(self) -> None:
        if not self.root.is_dir():
            raise ModelLoadError(f"the model repository {self.root} is not a folder")

    def names(self) -> list[str]:
        # OSError when the folder is gone: a re-read must not take that for a repository emptied.
        return model_names(self.root)

    def read(self, name: str) -> ModelFolder:
        return read_model_folder(self.root, name)

    def load_version(self, folder: ModelFolder, version: str, runtime: RuntimeOptions) -> Model:
        return load_model(folder.versions[int(version)], runtime, name=folder.name, version=version)

    def __str__(self) -> str:
        return str(self.root)


class ModelFiles:
    """Model files given alone, loaded, by name: each a model of one version."""

    from_repository = False
    remedy = "fix the model file, or leave it out"

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
    def load(cls, paths: Iterable[Path], options: RuntimeOptions) -> "ModelFiles":
        """The files given, and the .onnx files of the folders given, in that order."""
        return cls([load_model(path, options) for path in find_model_files(paths)])

    def __iter__(self):
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def check(self) -> None:
        pass  # checked when the files were loaded

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model {name!r}; the model files given are: {', '.join(self._models) or 'none'}")
        return model

    def read(self, name: str) -> ModelFolder:
        model = self.get(name)
        return ModelFolder(name, model.path.parent, config=None, versions={int(model.version): model.path})

    def load_version(self, folder: ModelFolder, version: str, runtime: RuntimeOptions) -> Model:
        return self.get(folder.name)  # loaded already, with the server's runtime options

    def __str__(self) -> str:
        return "the model files given (--model)"
