"""zoo.layers: the from-scratch Conv2D and the EdgeDetector, their gradients, and their export to
ONNX with dynamic height and width (run in ONNX Runtime at two image sizes)."""
from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from zoo.layers import Conv2D, EdgeDetector
from zoo.models import get_model
from zoo.ops import reference, vectorised


def test_conv2d_parameters_as_in_the_documents():
    torch.manual_seed(0)
    layer = Conv2D((1, 2))
    assert layer.weight.shape == (1, 2) and layer.bias.shape == (1,)
    assert ((layer.weight >= 0) & (layer.weight < 1)).all()  # torch.rand
    assert layer.bias.item() == 0.0
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert Conv2D(3).weight.shape == (3, 3)
    assert "kernel_size=(1, 2)" in repr(layer)


def test_conv2d_forward_is_corr2d_plus_bias():
    torch.manual_seed(0)
    layer = Conv2D((2, 3))
    with torch.no_grad():
        layer.bias.fill_(0.5)
    X = torch.rand(5, 6)
    expected = reference.corr2d(X, layer.weight.detach()) + 0.5
    torch.testing.assert_close(layer(X), expected)
    # Batches of single-channel images, as the models feed it: (N, 1, H, W).
    batch = torch.stack([X, 2 * X])[:, None]
    out = layer(batch)
    assert out.shape == (2, 1, 4, 4)
    torch.testing.assert_close(out[0, 0], expected)
    torch.testing.assert_close(out[1, 0], reference.corr2d(2 * X, layer.weight.detach()) + 0.5)


def test_conv2d_gradients_flow_and_match_torch_conv2d():
    torch.manual_seed(0)
    layer = Conv2D((2, 2))
    twin = nn.Conv2d(1, 1, (2, 2))
    with torch.no_grad():
        twin.weight.copy_(layer.weight[None, None])
        twin.bias.copy_(layer.bias)
    X = torch.rand(3, 1, 6, 7)
    target = torch.rand(3, 1, 5, 6)
    ((layer(X) - target) ** 2).mean().backward()
    ((twin(X) - target) ** 2).mean().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    torch.testing.assert_close(layer.weight.grad, twin.weight.grad[0, 0])
    torch.testing.assert_close(layer.bias.grad, twin.bias.grad)


def test_edge_detector_is_fixed_not_learned():
    detector = EdgeDetector()
    assert list(detector.parameters()) == []
    assert detector.kernel.tolist() == [[1.0, -1.0]]
    assert EdgeDetector("horizontal").kernel.tolist() == [[1.0], [-1.0]]
    assert "kernel" in detector.state_dict()  # travels with a checkpoint as a buffer
    assert "orientation='vertical'" in repr(detector)


def test_edge_detector_on_a_batch():
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    batch = torch.stack([X, 1 - X])[:, None]
    out = EdgeDetector()(batch)
    assert out.shape == (2, 1, 6, 7)
    assert out[0, 0, 0].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    assert out[1, 0, 0].tolist() == [0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # inverted image, inverted edges


def test_edge_detector_orientation_is_checked():
    with pytest.raises(ValueError, match="orientation must be 'vertical' or 'horizontal'"):
        EdgeDetector("diagonal")


# --- ONNX export ---------------------------------------------------------------------------------


def export_and_load(model: nn.Module, example: torch.Tensor, tmp_path, output_names, min_height: int, min_width: int):
    """Export with batch, height and width dynamic, and open the graph in ONNX Runtime.

    torch.export runs first and on its own: a shape guard that the declared range would violate
    then fails the test, where torch.onnx.export would quietly fall back to draft_export. (Any
    slice whose length can reach 1 guards on that, hence the per-model minimum sizes.) The ONNX
    optimiser is left off: graph optimisation is the export package's concern and doubles the time.
    """
    dynamic = {
        0: torch.export.Dim("batch", min=1, max=1024),
        2: torch.export.Dim("height", min=min_height, max=4096),
        3: torch.export.Dim("width", min=min_width, max=4096),
    }
    exported = torch.export.export(model.eval(), (example,), dynamic_shapes={"x": dynamic})
    program = torch.onnx.export(
        exported, dynamo=True, input_names=["image"], output_names=output_names, optimize=False, verbose=False
    )
    path = tmp_path / "model.onnx"
    program.save(str(path))
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_runtime_matches_torch(session, model: nn.Module, shapes) -> None:
    for shape in shapes:
        X = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            expected = model(X)
        expected = expected if isinstance(expected, tuple) else (expected,)
        outputs = session.run(None, {"image": X.numpy()})
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected):
            assert got.shape == tuple(want.shape), shape
            np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0, err_msg=f"input {shape}")


def test_scratch_conv2d_exports_with_dynamic_height_and_width(tmp_path):
    # The registry's "conv2d" model is zoo.layers.Conv2D on (N, 1, H, W) images.
    torch.manual_seed(0)
    model = get_model("conv2d")
    assert isinstance(model.conv, Conv2D)
    with torch.no_grad():
        model.conv.bias.fill_(0.25)  # a non-zero bias must survive the export too
    # The 1x2 kernel leaves the height as it is and the width one shorter, which must stay >= 2.
    session = export_and_load(model, torch.rand(2, 1, 6, 8), tmp_path, ["feature_map"], min_height=1, min_width=3)
    assert session.get_inputs()[0].name == "image"
    symbolic = session.get_inputs()[0].shape
    assert isinstance(symbolic[0], str) and isinstance(symbolic[2], str) and isinstance(symbolic[3], str), symbolic
    assert_runtime_matches_torch(session, model, [(2, 1, 6, 8), (1, 1, 28, 28), (3, 1, 1, 3), (1, 1, 11, 5)])


class EveryVectorisedOp(nn.Module):
    """Mirror padding, padded strided correlation, both poolings, multi-channel and strict convolution."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        # Small windows: the export time grows with the number of kernel offsets.
        self.kernel = nn.Parameter(torch.randn(2, 2, generator=generator))
        self.channel_kernel = nn.Parameter(torch.randn(2, 1, 2, 1, generator=generator))

    def forward(self, x):
        y = vectorised.pad2d(x, (1, 2), mode="reflect")
        y = vectorised.corr2d(y, self.kernel, padding=1, stride=(2, 1))
        averaged = vectorised.pool2d(y, 2, mode="avg", padding=1, stride=2)
        maxed = vectorised.pool2d(y, (1, 2), mode="max", stride=1)
        channels = vectorised.corr2d_multi_in_out(maxed, self.channel_kernel, padding=(0, 1))
        strict = vectorised.conv2d_strict(x, self.kernel)
        return averaged, channels, strict


def test_vectorised_ops_export_with_dynamic_height_and_width(tmp_path):
    model = EveryVectorisedOp()
    # From a 3x3 image up, every intermediate height and width stays >= 2.
    session = export_and_load(
        model, torch.rand(2, 1, 9, 10), tmp_path, ["averaged", "channels", "strict"], min_height=3, min_width=3
    )
    assert_runtime_matches_torch(session, model, [(2, 1, 9, 10), (1, 1, 13, 6), (3, 1, 3, 3), (1, 1, 32, 17)])
