"""contracts/generated/ is exactly what `python -m contracts.generate_stubs` makes from protos/."""
from __future__ import annotations

from pathlib import Path

import pytest

from contracts import generate_stubs
from contracts.generated.digits.v1 import digits_pb2
from contracts.generated.inference import grpc_service_pb2
from serve.api import services


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_generated_stubs_are_up_to_date(tmp_path):
    pytest.importorskip("grpc_tools")
    fresh = tmp_path / "generated"
    generate_stubs.generate(fresh)
    committed, regenerated = _files(generate_stubs.GENERATED_ROOT), _files(fresh)
    assert sorted(committed) == sorted(regenerated), "files differ: run `python -m contracts.generate_stubs`"
    stale = [name for name in regenerated if committed[name] != regenerated[name]]
    assert not stale, f"stale stubs {stale}: run `python -m contracts.generate_stubs` and commit the result"


def test_stub_imports_are_package_relative():
    for path in generate_stubs.GENERATED_ROOT.rglob("*_grpc.py"):
        text = path.read_text()
        assert "from digits.v1 import" not in text and "from inference import" not in text, path


def test_relative_import_rewriting():
    source = "from a.b import x_pb2 as a_dot_b_dot_x__pb2\nfrom google.protobuf import empty_pb2 as e\n"
    rewritten = generate_stubs.relative_imports(source, ("c",), {("a", "b"), ("c",)})
    assert rewritten.splitlines() == ["from ..a.b import x_pb2 as a_dot_b_dot_x__pb2", "from google.protobuf import empty_pb2 as e"]
    same_package = generate_stubs.relative_imports(source, ("a", "b"), {("a", "b")})
    assert same_package.splitlines()[0] == "from . import x_pb2 as a_dot_b_dot_x__pb2"


def test_the_services_that_label_calls_are_the_protos_services():
    assert services.DIGITS_SERVICE == digits_pb2.DESCRIPTOR.services_by_name["DigitClassifier"].full_name
    assert services.INFERENCE_SERVICE == grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
