"""Reading deploy/ the way the engines do: kustomize renders, the Dockerfile's instructions, containers' flags."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
OVERLAYS = DEPLOY / "kubernetes" / "overlays"
KSERVE = DEPLOY / "kserve"
DOCKERFILE = DEPLOY / "Dockerfile"
KSERVE_MODEL_DIR = "/mnt/models"
KSERVE_NAME_TEMPLATE = "{{.Name}}"
# Kubernetes' default when a pod sets none (KServe's pods): the kubelet's SIGKILL after it.
DEFAULT_TERMINATION_GRACE_S = 30


def render_kustomization(folder: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the kustomize overlays cannot be rendered (kubectl kustomize)")
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {folder} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_all() -> dict[str, list[dict]]:
    """Each overlay (rendered) and each plain KServe file (parsed), by path relative to deploy/."""
    sources: dict[str, list[dict]] = {}
    for overlay in sorted(path for path in OVERLAYS.iterdir() if (path / "kustomization.yaml").is_file()):
        sources[str(overlay.relative_to(DEPLOY))] = render_kustomization(overlay)
    for path in sorted(KSERVE.glob("*.yaml")):
        sources[str(path.relative_to(DEPLOY))] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return sources


def documents(rendered: dict[str, list[dict]], kind: str | None = None) -> Iterator[tuple[str, dict]]:
    for source, docs in rendered.items():
        for doc in docs:
            if kind is None or doc["kind"] == kind:
                yield source, doc


def only(rendered: dict[str, list[dict]], source: str, kind: str) -> dict:
    found = [doc for doc in rendered[source] if doc["kind"] == kind]
    assert len(found) == 1, f"{source}: expected one {kind}, found {len(found)}"
    return found[0]


@dataclass(frozen=True)
class ServingContainer:
    """A container that runs the server: its source, the container spec and, for pods, the pod spec."""

    source: str
    container: dict
    pod: dict = field(default_factory=dict)  # empty for a ServingRuntime (KServe builds the pod)

    @property
    def argv(self) -> list[str]:
        return [*self.container["command"], *self.container.get("args", [])]

    def port(self, name_or_number: int | str) -> int:
        """A probe's or Service's port: a number, or the name of one of the container's ports."""
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container.get("ports", []):
            if port.get("name") == name_or_number:
                return port["containerPort"]
        raise AssertionError(f"{self.source}: no container port named {name_or_number!r}")


def serving_containers(rendered: dict[str, list[dict]]) -> list[ServingContainer]:
    found = []
    for source, doc in documents(rendered, "Deployment"):
        pod = doc["spec"]["template"]["spec"]
        found.extend(ServingContainer(source, container, pod) for container in pod["containers"])
    for source, doc in documents(rendered, "ServingRuntime"):
        found.extend(ServingContainer(source, container) for container in doc["spec"]["containers"])
    return found


def flag_values(argv: list[str]) -> dict[str, str]:
    """--name=value and --name value pairs of a command line (the last one wins, as argparse does)."""
    values: dict[str, str] = {}
    for index, token in enumerate(argv):
        if not token.startswith("--"):
            continue
        if "=" in token:
            name, value = token.split("=", 1)
        elif index + 1 < len(argv) and not argv[index + 1].startswith("--"):
            name, value = token, argv[index + 1]
        else:
            name, value = token, ""
        values[name] = value
    return values


def is_port_flag(name: str) -> bool:
    return name.endswith("_port") or name.endswith("-port")


def cpu_cores(quantity: str | int) -> float:
    """A Kubernetes CPU quantity ("2", "500m") in cores."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def memory_bytes(quantity: str | int) -> int:
    match = re.fullmatch(r"(\d+)([KMG]i?)?", str(quantity))
    assert match, f"unexpected memory quantity {quantity!r}"
    return int(match.group(1)) * _MEMORY_UNITS.get(match.group(2) or "", 1)


def server_flags() -> set[str]:
    """Every flag the usage line of `python -m serve` offers in this checkout (those it hides are the
    supervisor's to pass its workers, never a manifest's)."""
    from serve.__main__ import build_parser

    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", build_parser().format_usage()))


def runnable_here(argv: list[str]) -> list[str]:
    """`argv` without the server flags this checkout's server does not have yet, each with a warning.

    The manifests are written for the released server; --workers (multi-process serving) may be
    newer than the server under test, and everything the test checks holds for one process too.
    """
    known = server_flags() | {"--model_name", "--model_dir", "--grpc_port", "--http_port", "--host"}
    kept, skip_value = [], False
    for index, token in enumerate(argv):
        if skip_value:
            skip_value = False
            continue
        name = token.split("=", 1)[0]
        if token.startswith("--") and name not in known:
            warnings.warn(f"{name} is not a flag of this checkout's server; running without it", stacklevel=2)
            skip_value = "=" not in token and index + 1 < len(argv) and not argv[index + 1].startswith("--")
            continue
        kept.append(token)
    return kept


@dataclass(frozen=True)
class Dockerfile:
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments), continuation lines joined

    def last(self, instruction: str) -> str:
        found = [arguments for name, arguments in self.instructions if name == instruction]
        assert found, f"the Dockerfile has no {instruction}"
        return found[-1]

    def exec_form(self, instruction: str) -> list[str]:
        return json.loads(self.last(instruction))

    @property
    def healthcheck_command(self) -> list[str]:
        _, _, command = self.last("HEALTHCHECK").partition(" CMD ")
        return json.loads(command)

    @property
    def exposed_ports(self) -> set[int]:
        return {int(port.split("/")[0]) for port in self.last("EXPOSE").split()}


def read_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        name, _, arguments = logical.partition(" ")
        instructions.append((name.upper(), " ".join(arguments.split())))
    return Dockerfile(instructions)
