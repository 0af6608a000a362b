"""Export into a model repository: numbered versions, and a config.pbtxt that Triton would load unchanged."""
from __future__ import annotations

import json

import onnx
import pytest
from google.protobuf import text_format

from export.__main__ import main
from export.repository import write_model_config
from zoo.models import list_models

triton_config = pytest.importorskip("tritonclient.grpc.model_config_pb2")

# ONNX element types -> Triton's config names, written out here rather than taken from serve, so
# the test does not check the code against itself.
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}


def _graph_tensors(values) -> list[tuple[str, str, list[int]]]:
    tensors = []
    for value in values:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        tensors.append((value.name, TRITON_TYPES[tensor_type.elem_type], dims))
    return tensors


def _parsed_by_triton(path) -> "triton_config.ModelConfig":
    """Parsed with Triton's own schema (tritonclient's copy), strictly: an unknown field fails."""
    return text_format.Parse(path.read_text(), triton_config.ModelConfig())


@pytest.mark.parametrize("name", list_models())
def test_config_pbtxt_matches_the_graph_field_by_field(name, random_export, tmp_path):
    _, onnx_path = random_export(name)
    model_dir = tmp_path / name
    model_dir.mkdir()
    config = _parsed_by_triton(write_model_config(onnx_path, model_dir))
    graph = onnx.load(onnx_path).graph
    initializers = {init.name for init in graph.initializer}
    inputs = _graph_tensors([value for value in graph.input if value.name not in initializers])
    outputs = _graph_tensors(graph.output)

    assert config.name == name
    assert config.platform == "onnxruntime_onnx"
    batched = all(dims and dims[0] == -1 for _, _, dims in inputs + outputs)
    assert batched, f"{name}: every zoo graph has a dynamic batch dimension"
    assert config.max_batch_size == 256
    # With max_batch_size > 0, Triton's dims leave the batch dimension out.
    assert [(t.name, triton_config.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        (tensor_name, datatype, dims[1:]) for tensor_name, datatype, dims in inputs
    ]
    assert [(t.name, triton_config.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == [
        (tensor_name, datatype, dims[1:]) for tensor_name, datatype, dims in outputs
    ]
    stackable = all(d > 0 for _, _, dims in inputs for d in dims[1:])
    assert config.HasField("dynamic_batching") == stackable
    if stackable:
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.version_policy.WhichOneof("policy_choice") == "latest"
    assert config.version_policy.latest.num_versions == 1
    assert [(group.count, group.kind) for group in config.instance_group] == [(2, triton_config.ModelInstanceGroup.KIND_AUTO)]


def test_an_operators_choices_in_config_pbtxt_survive_a_new_export(random_export, tmp_path):
    _, onnx_path = random_export("lenet")
    model_dir = tmp_path / "lenet"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(
        'name: "lenet"\nversion_policy { all {} }\ninstance_group [ { count: 4 kind: KIND_CPU } ]\n'
        "dynamic_batching { max_queue_delay_microseconds: 500 }\ninput [ { name: \"stale\" data_type: TYPE_FP32 dims: [3] } ]\n"
    )
    config = _parsed_by_triton(write_model_config(onnx_path, model_dir))
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert [(g.count, g.kind) for g in config.instance_group] == [(4, triton_config.ModelInstanceGroup.KIND_CPU)]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [t.name for t in config.input] == ["pixels"]  # the tensors always follow the file


def test_export_writes_numbered_versions_that_the_server_serves(tmp_path, mnist_root):
    from contracts.sessions import RuntimeOptions
    from serve.core.control import LifecycleOptions
    from serve.server import BackgroundServer, ServerConfig

    grpcclient = pytest.importorskip("tritonclient.grpc")
    repo = tmp_path / "repo"
    common = ["--random-weights", "--repository", str(repo), "--data-dir", str(mnist_root), "--cpu-only", "-q"]
    assert main(["lenet", *common]) == 0
    assert main(["lenet", *common, "--seed", "1"]) == 0
    model_dir = repo / "lenet"
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2", "config.pbtxt"]
    assert sorted(p.name for p in (model_dir / "2").iterdir()) == ["model.onnx", "model.parity.json", "model.test_data"]
    report = json.loads((model_dir / "2" / "model.parity.json").read_text())
    assert report["passed"] and report["onnx_file"] == str(model_dir / "2" / "model.onnx")
    assert report["test_data"]["dir"].startswith(str(model_dir / "2"))
    assert main(["lenet", *common, "-o", str(tmp_path / "x.onnx")]) == 2  # the repository names the file
    config = ServerConfig(model_repository=repo, lifecycle=LifecycleOptions("none"), port=0, http_port=None,
                          runtime=RuntimeOptions(device="cpu"), grace_s=1.0)
    with BackgroundServer(config) as server:
        client = grpcclient.InferenceServerClient(url=server.target)
        metadata = client.get_model_metadata("lenet", as_json=True)
        assert metadata["versions"] == ["2"] and metadata["platform"] == "onnxruntime_onnx"
        client.close()


def test_variants_are_refused_with_a_repository(tmp_path, capsys):
    assert main(["lenet", "--random-weights", "--repository", str(tmp_path), "--quantize", "int8"]) == 2
    assert "a variant is a model of its own" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing is left behind"
