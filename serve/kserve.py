"""python -m serve.kserve: the container's entrypoint, KServe's command line mapped onto `python -m serve`.

KServe starts a ServingRuntime's container with its own flag names (--model_name, --model_dir,
--http_port, --grpc_port) and puts the InferenceService's model under /mnt/models, either as model
files (a single .onnx file, possibly named anything) or as a Triton-style model repository
(NAME/VERSION/model.onnx). This launcher tells the two apart, maps the flags and runs the server;
every other flag goes to `python -m serve` unchanged. The Deployment in deploy/ uses it too, so
one entrypoint serves whatever is mounted.

Exit codes are the server's: 2 when it cannot start (here: nothing servable under --model_dir).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from contracts.model_file import MODEL_SUFFIX
from serve.api.http_server import DEFAULT_HTTP_PORT
from serve.server import DEFAULT_PORT

KSERVE_MODEL_DIR = Path("/mnt/models")
# In a container the server must answer on the pod's address, not only on loopback.
CONTAINER_HOST = "0.0.0.0"
EXIT_START_FAILED = 2
# Flags this launcher sets from KServe's; passing them as well would say two things at once.
MAPPED_FLAGS = {"--model": "--model_dir", "--model-repository": "--model_dir", "--port": "--grpc_port",
                "--http-port": "--http_port"}


class LayoutError(ValueError):
    """Nothing servable under the model folder; the message says what was found and what is expected."""


@dataclass(frozen=True)
class ModelLayout:
    flag: str  # the `python -m serve` flag that loads this layout
    path: Path
    description: str


def _visible(folder: Path) -> list[Path]:
    # Kubernetes' ConfigMap and Secret volumes keep their real files in hidden, timestamped folders
    # ("..data") behind symlinks of the visible names; only the visible names are the models.
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def _is_model_folder(entry: Path) -> bool:
    """A repository's model: a folder holding numbered version folders (Triton's layout)."""
    return entry.is_dir() and any(version.is_dir() and version.name.isdigit() for version in entry.iterdir())


def detect_layout(model_dir: Path) -> ModelLayout:
    """How `python -m serve` should load what KServe (or a volume) put at `model_dir`."""
    model_dir = Path(model_dir)
    if model_dir.is_file():
        return ModelLayout("--model", model_dir, "a model file")
    if not model_dir.is_dir():
        raise LayoutError(
            f"{model_dir} does not exist: mount the models there (KServe: the InferenceService's storageUri) "
            "or pass --model_dir"
        )
    entries = _visible(model_dir)
    model_folders = [entry for entry in entries if _is_model_folder(entry)]
    model_files = [entry for entry in entries if entry.is_file() and entry.suffix == MODEL_SUFFIX]
    if model_folders and model_files:
        raise LayoutError(
            f"{model_dir} mixes a model repository ({', '.join(entry.name for entry in model_folders)}) with loose "
            f"model files ({', '.join(entry.name for entry in model_files)}): keep one layout"
        )
    if model_folders:
        names = ", ".join(entry.name for entry in model_folders)
        return ModelLayout("--model-repository", model_dir, f"a model repository ({names})")
    if model_files:
        return ModelLayout("--model", model_dir, f"model files ({', '.join(entry.name for entry in model_files)})")
    files = [entry for entry in entries if entry.is_file()]
    if len(files) == 1:
        return ModelLayout("--model", files[0], "a single model file")
    found = ", ".join(entry.name + ("/" if entry.is_dir() else "") for entry in entries) or "nothing"
    raise LayoutError(
        f"{model_dir} holds no model: expected {MODEL_SUFFIX} files, a single model file, or a model repository "
        f"(NAME/1/model{MODEL_SUFFIX}); found {found}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serve.kserve",
        description="Serve what is mounted at --model_dir (model files or a model repository) with KServe's "
        "flag names; any other flag is passed to `python -m serve` (see python -m serve --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        # Abbreviations would let the server's own flags (--model) pass for KServe's (--model_name).
        allow_abbrev=False,
    )
    parser.add_argument("--model_name", help="the InferenceService's name, logged; each model keeps the name its "
                                             "card (or its repository folder) gives it")
    parser.add_argument("--model_dir", type=Path, default=KSERVE_MODEL_DIR,
                        help="a model file, a folder of them, or a model repository (NAME/VERSION/model.onnx)")
    parser.add_argument("--grpc_port", type=int, default=DEFAULT_PORT, help="gRPC port (KServe's h2c port)")
    parser.add_argument("--http_port", type=int, default=DEFAULT_HTTP_PORT, help="HTTP/REST port")
    parser.add_argument("--host", default=CONTAINER_HOST, help="address to listen on")
    return parser


def serve_arguments(argv: list[str]) -> tuple[list[str], ModelLayout, str | None]:
    """`python -m serve`'s arguments for this command line, the layout found and the InferenceService name.

    Raises LayoutError, and exits 2 through argparse for flags that contradict the mapped ones.
    """
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    for flag in passthrough:
        name = flag.split("=", 1)[0]
        if name in MAPPED_FLAGS:
            parser.error(f"{name} is set from {MAPPED_FLAGS[name]} here; pass {MAPPED_FLAGS[name]} instead")
    layout = detect_layout(args.model_dir)
    mapped = [layout.flag, str(layout.path), "--host", args.host, "--port", str(args.grpc_port),
              "--http-port", str(args.http_port)]
    return mapped + passthrough, layout, args.model_name


def main(argv: list[str] | None = None) -> int:
    from serve.__main__ import main as serve_main

    argv = sys.argv[1:] if argv is None else argv
    try:
        serve_argv, layout, model_name = serve_arguments(argv)
    except LayoutError as exc:
        print(f"python -m serve.kserve: error: {exc}", file=sys.stderr)
        return EXIT_START_FAILED
    served = f"InferenceService {model_name}: " if model_name else ""
    print(f"python -m serve.kserve: {served}{layout.description} -> python -m serve {shlex.join(serve_argv)}",
          file=sys.stderr, flush=True)
    return serve_main(serve_argv)


if __name__ == "__main__":
    sys.exit(main())
