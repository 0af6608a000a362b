"""The project's import graph, read from the source with `ast`, and the direction its arrows must run.

    python tests/import_graph.py        # the package-level graph and any import that runs the wrong way

Each first-party module's imports (top level and inside functions, absolute and relative) are
edges; an edge is allowed when its target's layer is one the source's layer may use. The layers,
from the bottom: contracts (torch-free; the digit format, image pipeline, model card, data folder,
ONNX Runtime sessions, repository layout, generated stubs), then zoo, export, serve and harness,
then bench and the tests on top. Within a layer, some modules must not import others: the HTTP
front door stands beside the gRPC one, not on it.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contracts", "zoo", "export", "serve", "harness", "bench")

# Layer -> the layers it may import (itself included). serve's parts are layers of their own so that
# the data plane never reaches up into its front doors or into the server that composes them.
ALLOWED: dict[str, set[str]] = {
    "contracts": {"contracts"},
    "zoo": {"contracts", "zoo"},
    "export": {"contracts", "zoo", "export"},
    "serve.core": {"contracts", "serve.core"},
    "serve.api": {"contracts", "serve.core", "serve.api"},
    "serve": {"contracts", "serve.core", "serve.api", "serve"},
    # The harness runs servers and drives them: above serve, beside nothing that needs torch.
    "harness": {"contracts", "serve.core", "serve.api", "serve", "harness"},
    "bench": {"contracts", "zoo", "export", "serve.core", "serve.api", "serve", "harness", "bench"},
}
# Third-party packages a layer must never import: a serving install has no torch.
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "contracts": {"torch", "torchvision", "onnx", "onnxscript"},
    "serve.core": {"torch", "torchvision"},
    "serve.api": {"torch", "torchvision"},
    "serve": {"torch", "torchvision"},
    "harness": {"torch", "torchvision"},
}
# Module-name prefix -> prefixes of what those modules must not import. The HTTP front door writes
# its JSON from the data plane's answers; it needs neither gRPC's modules nor protobuf.
FORBIDDEN_PREFIXES: dict[str, tuple[str, ...]] = {
    "serve.api.http_": ("serve.api.grpc_", "grpc", "google.protobuf", "contracts.generated"),
}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    path: Path
    line: int
    # `from target import a, b`: the names imported, each of which may be a module itself.
    names: tuple[str, ...] = ()

    def __str__(self) -> str:
        imported = f"{', '.join(self.names)} from {self.target}" if self.names else self.target
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}: {self.source} imports {imported}"


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "serve" and len(parts) > 1 and parts[1] in ("core", "api"):
        return f"serve.{parts[1]}"
    return parts[0] if parts[0] in PACKAGES else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[Edge]:
    source = module_name(path)
    package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            edges += [Edge(source, alias.name, path, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            edges.append(Edge(source, target, path, node.lineno, tuple(alias.name for alias in node.names)))
    return edges


def project_modules() -> list[Path]:
    return sorted(
        path for package in PACKAGES for path in (REPO_ROOT / package).rglob("*.py") if "__pycache__" not in path.parts
    )


def all_edges() -> list[Edge]:
    return [edge for path in project_modules() for edge in imports_of(path)]


def _forbidden_within(edge: Edge) -> bool:
    """Whether `edge` imports what its module's FORBIDDEN_PREFIXES rule excludes."""
    targets = [edge.target, *(f"{edge.target}.{name}" for name in edge.names)]
    return any(
        target.startswith(forbidden)
        for prefix, forbiddens in FORBIDDEN_PREFIXES.items() if edge.source.startswith(prefix)
        for forbidden in forbiddens for target in targets
    )


def wrong_way(edges: list[Edge]) -> list[Edge]:
    """Imports that point up or sideways between layers, into a forbidden third-party package, or
    into what FORBIDDEN_PREFIXES keeps a module from."""
    bad = []
    for edge in edges:
        source_layer = layer_of(edge.source)
        target_layer = layer_of(edge.target)
        if target_layer is not None and target_layer not in ALLOWED[source_layer]:
            bad.append(edge)
        elif target_layer is None and edge.target.split(".")[0] in FORBIDDEN_THIRD_PARTY.get(source_layer, ()):
            bad.append(edge)
        elif _forbidden_within(edge):
            bad.append(edge)
    return bad


def layer_graph(edges: list[Edge]) -> dict[str, dict[str, int]]:
    """Layer -> layer -> how many import statements connect them."""
    graph: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for edge in edges:
        source_layer, target_layer = layer_of(edge.source), layer_of(edge.target)
        if target_layer is not None and target_layer != source_layer:
            graph[source_layer][target_layer] += 1
    return graph


def main() -> int:
    edges = all_edges()
    for source, targets in sorted(layer_graph(edges).items()):
        print(f"{source:<11} -> " + ", ".join(f"{target} ({count})" for target, count in sorted(targets.items())))
    bad = wrong_way(edges)
    print(f"\n{len(bad)} import(s) run the wrong way" + (":" if bad else ""))
    for edge in bad:
        print(f"  {edge}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
