"""Imports point down only: contracts at the bottom, zoo/export/serve above it, bench and tests on top."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import import_graph
import pytest


def test_every_import_runs_down_the_layers():
    bad = import_graph.wrong_way(import_graph.all_edges())
    assert not bad, "imports that run the wrong way:\n" + "\n".join(map(str, bad))


def test_every_first_party_module_has_a_layer():
    modules = [import_graph.module_name(path) for path in import_graph.project_modules()]
    assert modules and all(import_graph.layer_of(module) in import_graph.ALLOWED for module in modules)


@pytest.mark.parametrize(
    "module, source, wrong",
    [
        ("zoo/data.py", "from serve.core.dataplane import DataPlane", True),
        ("export/card.py", "import serve.api.grpc_digits", True),
        ("contracts/model_card.py", "from zoo.models import get_model", True),
        ("contracts/images/decode.py", "from ..sessions import create_session", False),
        ("contracts/images/decode.py", "from ...serve import server", True),
        ("serve/core/runner.py", "from serve.api.metrics import Metrics", True),
        ("serve/api/http_digits.py", "from serve.server import Server", True),
        ("serve/server.py", "import torch", True),
        ("serve/core/runner.py", "def f():\n    import torch", True),
        ("serve/server.py", "from serve.api import grpc_server", False),
        ("export/card.py", "from zoo.models import get_model", False),
        ("bench/serve.py", "from serve.server import Server", False),
        # The HTTP front door imports neither the gRPC one nor protobuf.
        ("serve/api/http_digits.py", "from serve.api.grpc_digits import model_metadata", True),
        ("serve/api/http_kserve.py", "from serve.api import grpc_kserve, http_tensors", True),
        ("serve/api/http_kserve.py", "from . import grpc_calls", True),
        ("serve/api/http_server.py", "import grpc", True),
        ("serve/api/http_server.py", "def f():\n    import grpc.aio", True),
        ("serve/api/http_digits.py", "from google.protobuf import json_format", True),
        ("serve/api/http_digits.py", "from google import protobuf", True),
        ("serve/api/http_digits.py", "from contracts.generated.digits.v1 import digits_pb2", True),
        ("serve/api/http_digits.py", "from serve.api.services import DIGITS_SERVICE", False),
        ("serve/api/http_digits.py", "from serve.api import http_server, services", False),
        ("serve/api/grpc_extensions.py", "from google.protobuf import json_format", False),
        ("serve/api/grpc_digits.py", "from serve.api.http_server import route", False),
    ],
)
def test_the_check_catches_an_import_that_runs_the_wrong_way(tmp_path, monkeypatch, module, source, wrong):
    path = tmp_path / module
    path.parent.mkdir(parents=True)
    path.write_text(textwrap.dedent(source) + "\n")
    monkeypatch.setattr(import_graph, "REPO_ROOT", tmp_path)
    assert bool(import_graph.wrong_way(import_graph.imports_of(path))) is wrong


def test_the_http_front_door_loads_no_grpc():
    """Not even through a module it shares with the gRPC side (auth, metrics, the data plane)."""
    modules = sorted(import_graph.module_name(path) for path in (import_graph.REPO_ROOT / "serve" / "api").glob("http_*.py"))
    assert modules
    program = (
        f"import sys\nimport {', '.join(modules)}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('grpc')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(import_graph.REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    loaded = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True, env=env,
                            cwd=import_graph.REPO_ROOT)
    assert loaded.stdout.strip() == "[]"
