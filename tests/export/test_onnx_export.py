"""Every registered model exports with dynamic axes and matches torch on random batches."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from export.cases import BATCH_SIZES, FEATURE_MAP_SIZES, random_cases
from export.errors import ExportError
from export.onnx_export import MAX_OPSET, MIN_OPSET, check_opset, export_onnx
from export.parity import check_parity, run_session
from export.providers import CPU, open_session
from export.source import load_source
from zoo.models import get_model_spec, list_models
from zoo.ops import reference


def _dims(value_info):
    return [dim.dim_param or dim.dim_value for dim in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", list_models())
def test_export_matches_torch_on_random_batches(name, random_export):
    source, path = random_export(name)
    cases = random_cases(source, seed=3)
    report = check_parity(path, cases, [CPU], "random inputs", logits_output="logits" if source.spec.is_classifier else None)
    assert report.passed, report.failures()
    sizes = {case.inputs.shape for case in cases}
    expected_hw = [tuple(source.preprocessing.input_size)] if source.spec.is_classifier else FEATURE_MAP_SIZES
    assert sizes == {(batch, 1, *hw) for batch in BATCH_SIZES for hw in expected_hw}
    for diff in report.providers[0].outputs:
        assert diff.max_abs_diff < 1e-5, diff


@pytest.mark.parametrize("name", list_models())
def test_graph_names_and_dynamic_axes(name, random_export):
    source, path = random_export(name)
    graph = onnx.load(path).graph
    if get_model_spec(name).is_classifier:
        assert [value.name for value in graph.input] == ["pixels"]
        assert [value.name for value in graph.output] == ["logits", "probabilities"]
        assert _dims(graph.input[0]) == ["batch", 1, *source.preprocessing.input_size]
        assert [_dims(value) for value in graph.output] == [["batch", 10], ["batch", 10]]
    else:
        assert [value.name for value in graph.input] == ["image"]
        assert [value.name for value in graph.output] == ["feature_map"]
        assert _dims(graph.input[0]) == ["batch", 1, "height", "width"]
        assert _dims(graph.output[0])[:2] == ["batch", 1]


def test_classifier_graph_normalises_pixels_itself(random_export):
    """Feeding [0, 1] pixels gives what the model computes on normalised pixels, and softmax sums to 1."""
    source, path = random_export("lenet-modern")
    pixels = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    got = run_session(open_session(path), pixels)
    import torch

    with torch.no_grad():
        expected = source.model(torch.from_numpy((pixels - 0.1307) / 0.3081)).numpy()
    np.testing.assert_allclose(got["logits"], expected, atol=1e-5)
    np.testing.assert_allclose(got["probabilities"].sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("name", ["edge", "conv2d"])
def test_feature_map_graph_is_the_cross_correlation(name, random_export):
    """Checked against the documents' loop implementation, on a size the export never saw."""
    source, path = random_export(name)
    image = np.random.default_rng(1).random((2, 1, 6, 11), dtype=np.float32)
    got = run_session(open_session(path), image)["feature_map"]
    module = source.model.conv
    kernel = module.weight.detach().reshape(module.weight.shape[-2:])
    bias = float(module.bias.detach()) if module.bias is not None else 0.0
    import torch

    for item in range(2):
        expected = reference.corr2d(torch.from_numpy(image[item, 0]), kernel) + bias
        np.testing.assert_allclose(got[item, 0], expected.numpy(), atol=1e-5)


def test_opset_bounds():
    assert check_opset(MIN_OPSET) == MIN_OPSET
    for bad in (MIN_OPSET - 1, MAX_OPSET + 1):
        with pytest.raises(ExportError, match="opset"):
            check_opset(bad)


def test_requested_opset_is_the_one_exported():
    model = export_onnx(load_source("edge", random_weights=True), opset=21)
    assert {opset.domain: opset.version for opset in model.opset_import}[""] == 21


def test_feature_map_model_with_a_larger_kernel(tmp_path):
    """A checkpoint may configure another kernel size: parity skips the image sizes it does not fit."""
    from zoo.checkpoint import Checkpoint, save_checkpoint
    from zoo.models import get_model

    model = get_model("conv2d", kernel_size=(3, 3))
    path = save_checkpoint(Checkpoint("conv2d", {"kernel_size": [3, 3]}, model.state_dict(), {}), tmp_path / "c.pt")
    source = load_source("conv2d", checkpoint_path=path)
    cases = random_cases(source)
    assert {case.inputs.shape[2:] for case in cases} == {(28, 28), (5, 9), (48, 17)}
    exported = tmp_path / "conv2d.onnx"
    onnx.save_model(export_onnx(source), exported)
    assert check_parity(exported, cases, [CPU], "random inputs").passed
