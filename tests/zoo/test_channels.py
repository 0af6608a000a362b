"""The "Multiple Input and Multiple Output Channels" worked examples and the 1x1 convolution."""
from __future__ import annotations

import pytest
import torch

from zoo.ops import reference, vectorised
from zoo.shapes import conv_parameter_count

OPS = [pytest.param(reference, id="reference"), pytest.param(vectorised, id="vectorised")]


def two_channel_input() -> torch.Tensor:
    return torch.tensor(
        [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]
    )


def two_channel_kernel() -> torch.Tensor:
    # The document prints `K = d2l.tensor([[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])`
    # (001_76a328f7b69cf327.txt): one opening bracket is missing. The figure and the output
    # [[56, 72], [104, 120]] are those of the (2, 2, 2) kernel below.
    return torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])


MULTI_IN_OUTPUT = torch.tensor([[56.0, 72.0], [104.0, 120.0]])


@pytest.mark.parametrize("ops", OPS)
def test_two_input_channels(ops):
    torch.testing.assert_close(ops.corr2d_multi_in(two_channel_input(), two_channel_kernel()), MULTI_IN_OUTPUT)


def test_the_documents_arithmetic_line_for_56():
    X, K = two_channel_input(), two_channel_kernel()
    # (1x1 + 2x2 + 4x3 + 5x4) + (0x0 + 1x1 + 3x2 + 4x3) = 56: the second channel's corner window
    # times its kernel, plus the first channel's.
    assert X[1, :2, :2].tolist() == [[1.0, 2.0], [4.0, 5.0]] and K[1].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert X[0, :2, :2].tolist() == [[0.0, 1.0], [3.0, 4.0]] and K[0].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert (1 * 1 + 2 * 2 + 4 * 3 + 5 * 4) + (0 * 0 + 1 * 1 + 3 * 2 + 4 * 3) == 56
    per_channel = [(X[c, :2, :2] * K[c]).sum() for c in range(2)]
    assert per_channel == [19.0, 37.0]  # channel 0 is the single-channel example's 19
    assert sum(per_channel) == MULTI_IN_OUTPUT[0, 0]


@pytest.mark.parametrize("ops", OPS)
def test_three_output_channels_from_k_k_plus_1_k_plus_2(ops):
    K = two_channel_kernel()
    K = torch.stack((K, K + 1, K + 2), 0)
    assert K.shape == (3, 2, 2, 2)
    expected = torch.tensor(
        [
            [[56.0, 72.0], [104.0, 120.0]],
            [[76.0, 100.0], [148.0, 172.0]],
            [[96.0, 128.0], [192.0, 224.0]],
        ]
    )
    torch.testing.assert_close(ops.corr2d_multi_in_out(two_channel_input(), K), expected)
    # The first channel is the multi-input, single-output result.
    torch.testing.assert_close(ops.corr2d_multi_in_out(two_channel_input(), K)[0], MULTI_IN_OUTPUT)


def test_multi_in_out_matches_torch_conv2d():
    K = two_channel_kernel()
    K = torch.stack((K, K + 1, K + 2), 0)
    X = two_channel_input()
    expected = torch.nn.functional.conv2d(X[None], K)[0]
    torch.testing.assert_close(vectorised.corr2d_multi_in_out(X, K), expected)
    torch.testing.assert_close(vectorised.corr2d_multi_in_out(X[None], K)[0], expected)  # batched


@pytest.mark.parametrize("seed", range(5))
def test_1x1_convolution_is_a_fully_connected_layer_per_pixel(seed):
    torch.manual_seed(seed)
    X = torch.normal(0, 1, (3, 3, 3))
    K = torch.normal(0, 1, (2, 3, 1, 1))
    for ops in (reference, vectorised):
        Y1 = ops.corr2d_multi_in_out_1x1(X, K)
        Y2 = ops.corr2d_multi_in_out(X, K)
        assert Y1.shape == Y2.shape == (2, 3, 3)
        assert float(torch.abs(Y1 - Y2).sum()) < 1e-6  # the documents' check
    # Each output pixel is K (c_o x c_i) times that pixel's channel vector.
    torch.testing.assert_close(vectorised.corr2d_multi_in_out_1x1(X, K)[:, 1, 2], K[:, :, 0, 0] @ X[:, 1, 2])
    torch.testing.assert_close(vectorised.corr2d_multi_in_out(X, K), reference.corr2d_multi_in_out(X, K))


def test_1x1_convolution_has_c_o_times_c_i_weights_plus_bias():
    layer = torch.nn.Conv2d(3, 2, kernel_size=1)
    assert conv_parameter_count(3, 2, 1) == 2 * 3 + 2 == sum(p.numel() for p in layer.parameters())
    assert conv_parameter_count(3, 2, 1, bias=False) == 2 * 3


def test_1x1_convolution_needs_a_1x1_kernel():
    with pytest.raises(ValueError, match="1x1 convolution"):
        vectorised.corr2d_multi_in_out_1x1(torch.rand(3, 4, 4), torch.rand(2, 3, 2, 2))


def test_channel_mismatch_is_refused():
    with pytest.raises(ValueError, match="2 channels but the kernel expects 3"):
        vectorised.corr2d_multi_in_out(two_channel_input(), torch.rand(1, 3, 2, 2))
    with pytest.raises(ValueError, match="kernel must be 4D"):
        vectorised.corr2d_multi_in_out(two_channel_input(), torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match="kernel must be 2D"):
        vectorised.corr2d(two_channel_input(), torch.rand(2, 2, 2))
