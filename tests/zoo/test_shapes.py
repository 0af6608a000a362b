"""zoo.shapes: the documents' shape formula, operation counts and the parameter counts of
"From Fully Connected Layers to Convolutions", each checked against a worked number and against
what torch (or the reference loops) actually do."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.ops import reference
from zoo.shapes import (
    OperationCount,
    Window,
    conv_operation_count,
    conv_output_shape,
    conv_output_size,
    conv_parameter_count,
    fully_connected_image_parameters,
    linear_parameter_count,
    local_parameters,
    pool_output_shape,
    receptive_field,
    translation_invariant_parameters,
)


def test_output_size_formula_without_padding_is_n_minus_k_plus_1():
    for n in range(1, 9):
        for k in range(1, n + 1):
            assert conv_output_size(n, k) == n - k + 1


@pytest.mark.parametrize("n", [5, 8, 13])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_output_shape_matches_torch(n, k, padding, stride):
    if n + 2 * padding < k:
        pytest.skip("no valid position")
    layer = nn.Conv2d(1, 1, (k, 1), padding=(padding, 0), stride=(stride, 1))
    out = layer(torch.zeros(1, 1, n, 3))
    assert conv_output_shape((n, 3), (k, 1), (padding, 0), (stride, 1)) == tuple(out.shape[-2:])


@pytest.mark.parametrize("k, padding, stride", [(2, 0, 2), (3, 1, 2), (3, 0, 3), (2, 1, 1), ((2, 3), (1, 0), (1, 3))])
def test_pool_output_shape_matches_torch(k, padding, stride):
    X = torch.zeros(1, 1, 7, 9)
    assert pool_output_shape((7, 9), k, padding, stride) == nn.MaxPool2d(k, stride, padding)(X).shape[-2:]
    assert pool_output_shape((7, 9), k, padding) == nn.MaxPool2d(k, padding=padding)(X).shape[-2:]


def test_shape_functions_refuse_bad_arguments():
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv_output_size(4, 7, padding_total=2)
    with pytest.raises(ValueError, match="kernel >= 1"):
        conv_output_size(4, 0)
    with pytest.raises(ValueError, match="int or a pair of ints"):
        conv_output_shape((4, 4), (1, 2, 3))


# --- Operation counts -------------------------------------------------------------------------


def test_5x5_convolution_with_128_channels_on_256x256_is_over_53_billion_operations():
    # "For a 256x256 pixel image with a 5x5 kernel and 128 input and output channels respectively
    # [this] amounts to over 53 billion operations (we count multiplications and additions separately)."
    assert conv_output_shape((256, 256), 5, padding=2) == (256, 256)
    count = conv_operation_count(128, 128, (256, 256), 5)
    assert count.multiplications == 256 * 256 * 128 * 128 * 25 == 26_843_545_600
    assert count.additions == count.multiplications
    assert count.total == 53_687_091_200
    assert count.total > 53e9


def test_multiplications_are_what_the_reference_loops_perform():
    # With all-ones input and kernel every product is 1, so the sum of the reference output is the
    # number of multiplications performed.
    c_in, c_out, kernel = 3, 2, (2, 3)
    X = torch.ones(c_in, 5, 6)
    K = torch.ones(c_out, c_in, *kernel)
    Y = reference.corr2d_multi_in_out(X, K)
    count = conv_operation_count(c_in, c_out, tuple(Y.shape[-2:]), kernel)
    assert count.multiplications == int(Y.sum()) == c_out * 4 * 4 * c_in * 2 * 3


def test_doubling_both_channel_counts_quadruples_the_work():
    # Exercise: O(h * w * k^2 * c_i * c_o).
    base = conv_operation_count(16, 32, (10, 10), 3)
    assert conv_operation_count(32, 64, (10, 10), 3).total == 4 * base.total
    assert conv_operation_count(16, 32, (20, 20), 3).total == 4 * base.total
    assert conv_operation_count(16, 32, (10, 10), 6).total == 4 * base.total


def test_operation_count_total():
    assert OperationCount(multiplications=3, additions=2).total == 5


# --- Parameter counts ---------------------------------------------------------------------------


def test_fully_connected_layer_on_a_megapixel_image():
    # One megapixel in, 1000 hidden units: 10^6 x 10^3 = 10^9 parameters.
    assert linear_parameter_count(10**6, 10**3, bias=False) == 10**9
    # A 1000x1000 image mapped to a 1000x1000 hidden representation: 10^12 parameters.
    assert fully_connected_image_parameters(1000, 1000) == 10**12


def test_translation_invariance_and_locality_cut_the_parameters():
    # Offsets a, b in (-1000, 1000): 4 * 10^6 parameters, independent of the position.
    assert translation_invariant_parameters(1000, 1000) == 4 * 10**6
    # |a|, |b| <= Delta: 4 * Delta^2; with Delta < 10 that is another four orders of magnitude.
    for delta in range(1, 11):
        assert local_parameters(delta) == 4 * delta**2
    assert translation_invariant_parameters(1000, 1000) // local_parameters(10) == 10**4


@pytest.mark.parametrize("c_in, c_out, k", [(1, 6, 5), (6, 16, 5), (3, 2, (1, 2)), (128, 128, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_parameter_counts_match_torch_layers(c_in, c_out, k, bias):
    conv = nn.Conv2d(c_in, c_out, k, bias=bias)
    assert conv_parameter_count(c_in, c_out, k, bias) == sum(p.numel() for p in conv.parameters())
    linear = nn.Linear(c_in * 7, c_out, bias=bias)
    assert linear_parameter_count(c_in * 7, c_out, bias) == sum(p.numel() for p in linear.parameters())


# --- Receptive field ----------------------------------------------------------------------------


def test_receptive_field_grows_with_depth_and_stride():
    assert receptive_field([]) == 1
    assert receptive_field([Window(3)]) == 3
    assert receptive_field([Window(3)] * 3) == 7
    # A stride-2 layer doubles the step of every layer above it.
    assert receptive_field([Window(2, 2), Window(3)]) == 2 + 2 * 2
    assert receptive_field([Window(5), Window(2, 2), Window(5), Window(2, 2)]) == 16
