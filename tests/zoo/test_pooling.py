"""The "Pooling" worked examples: the chapter's pool2d, padding and stride, channels, and torch's layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.ops import reference, vectorised
from zoo.shapes import pool_output_shape

OPS = [pytest.param(reference, id="reference"), pytest.param(vectorised, id="vectorised")]

X_3x3 = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])


def arange_4x4() -> torch.Tensor:
    return torch.arange(16, dtype=torch.float32).reshape((1, 1, 4, 4))


@pytest.mark.parametrize("ops", OPS)
def test_max_and_average_pooling_of_the_3x3_example(ops):
    # The chapter's pool2d: stride 1, no padding; max(0, 1, 3, 4) = 4, max(1, 2, 4, 5) = 5, ...
    torch.testing.assert_close(ops.pool2d(X_3x3, (2, 2)), torch.tensor([[4.0, 5.0], [7.0, 8.0]]))
    torch.testing.assert_close(ops.pool2d(X_3x3, (2, 2), "avg"), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


def test_each_max_is_the_documents_window():
    assert [max(0, 1, 3, 4), max(1, 2, 4, 5), max(3, 4, 6, 7), max(4, 5, 7, 8)] == [4, 5, 7, 8]
    windows = [X_3x3[i : i + 2, j : j + 2].max() for i in range(2) for j in range(2)]
    assert windows == reference.pool2d(X_3x3, 2).flatten().tolist()


def torch_max_pool(X: torch.Tensor, pool_size, padding, stride) -> torch.Tensor:
    return nn.MaxPool2d(pool_size, stride=stride, padding=padding)(X)


# (pool size, padding, stride) on the 4x4 arange -> what the documents print for nn.MaxPool2d.
MAX_POOL_EXAMPLES = [
    pytest.param(3, 0, 3, [[10.0]], id="3x3-default-stride"),
    pytest.param(3, 1, 2, [[5.0, 7.0], [13.0, 15.0]], id="3x3-pad1-stride2"),
    pytest.param((2, 3), (0, 1), (2, 3), [[5.0, 7.0], [13.0, 15.0]], id="2x3-pad0,1-stride2,3"),
]


@pytest.mark.parametrize("pool_size, padding, stride, expected", MAX_POOL_EXAMPLES)
def test_max_pooling_padding_and_stride(pool_size, padding, stride, expected):
    X = arange_4x4()
    expected = torch.tensor(expected)
    torch.testing.assert_close(torch_max_pool(X, pool_size, padding, stride)[0, 0], expected)
    torch.testing.assert_close(vectorised.pool2d(X, pool_size, padding=padding, stride=stride)[0, 0], expected)
    torch.testing.assert_close(reference.pool2d(X[0, 0], pool_size, padding=padding, stride=stride), expected)
    assert pool_output_shape((4, 4), pool_size, padding, stride) == expected.shape


def test_torch_pooling_defaults_the_stride_to_the_window():
    # nn.MaxPool2d(3) means stride 3, so one 3x3 window fits the 4x4 input; the chapter's pool2d
    # defaults to stride 1 instead (2x2 output).
    assert nn.MaxPool2d(3)(arange_4x4()).tolist() == [[[[10.0]]]]
    assert pool_output_shape((4, 4), 3) == (1, 1)
    assert vectorised.pool2d(arange_4x4(), 3).shape[-2:] == (2, 2)
    assert vectorised.pool2d(arange_4x4(), 3, stride=3).tolist() == [[[[10.0]]]]


def test_pooling_two_channels_keeps_two_channels():
    X = arange_4x4()
    X = torch.cat((X, X + 1), 1)
    assert X.shape == (1, 2, 4, 4)
    expected = torch.tensor([[[[5.0, 7.0], [13.0, 15.0]], [[6.0, 8.0], [14.0, 16.0]]]])
    torch.testing.assert_close(nn.MaxPool2d(3, padding=1, stride=2)(X), expected)
    torch.testing.assert_close(vectorised.pool2d(X, 3, padding=1, stride=2), expected)
    for channel in range(2):
        torch.testing.assert_close(reference.pool2d(X[0, channel], 3, padding=1, stride=2), expected[0, channel])


@pytest.mark.parametrize(
    "pool_size, padding, stride", [(3, 1, 2), (2, 1, 1), ((2, 3), (1, 1), (2, 1)), (3, 1, 1), (2, 0, 2)]
)
def test_average_pooling_with_padding_counts_the_zeros_like_torch(pool_size, padding, stride):
    X = torch.rand(1, 2, 5, 6, generator=torch.Generator().manual_seed(0))
    expected = nn.AvgPool2d(pool_size, stride=stride, padding=padding)(X)  # count_include_pad=True
    torch.testing.assert_close(vectorised.pool2d(X, pool_size, "avg", padding=padding, stride=stride), expected)
    for channel in range(2):
        torch.testing.assert_close(
            reference.pool2d(X[0, channel], pool_size, "avg", padding=padding, stride=stride), expected[0, channel]
        )


def test_max_pooling_padding_never_wins():
    # Padding with -inf, not 0: an all-negative input still pools to its own values.
    X = -1.0 - torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    expected = nn.MaxPool2d(3, padding=1, stride=2)(X)
    assert (expected < 0).all()
    torch.testing.assert_close(vectorised.pool2d(X, 3, padding=1, stride=2), expected)
    torch.testing.assert_close(reference.pool2d(X[0, 0], 3, padding=1, stride=2), expected[0, 0])


def test_average_pooling_is_a_convolution_with_a_constant_kernel():
    # Exercise 1: average pooling through a convolution.
    X = torch.rand(5, 7, generator=torch.Generator().manual_seed(1))
    kernel = torch.full((2, 3), 1.0 / 6)
    torch.testing.assert_close(vectorised.corr2d(X, kernel, stride=(2, 1)), vectorised.pool2d(X, (2, 3), "avg", stride=(2, 1)))


def test_max_pooling_tolerates_a_one_pixel_shift_of_an_edge():
    # The chapter's argument: after 2x2 max pooling the edge detector's response still fires at
    # the same place when the image moves by one pixel.
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    shifted = torch.roll(X, shifts=1, dims=1)
    K = torch.tensor([[1.0, -1.0]])
    edges, shifted_edges = vectorised.corr2d(X, K), vectorised.corr2d(shifted, K)
    assert not torch.equal(edges, shifted_edges)
    pooled, shifted_pooled = vectorised.pool2d(edges, 2), vectorised.pool2d(shifted_edges, 2)
    assert (pooled[:, 1] == 1).all() and (shifted_pooled[:, 1] == 1).all()


@pytest.mark.parametrize("ops", OPS)
def test_unknown_pooling_mode_is_refused(ops):
    with pytest.raises(ValueError, match=r"pooling mode must be one of \('max', 'avg'\), got 'min'"):
        ops.pool2d(X_3x3, 2, "min")


@pytest.mark.parametrize("ops", OPS)
def test_pooling_window_larger_than_the_input_is_refused(ops):
    with pytest.raises(ValueError, match=r"pooling window \(4, 4\) does not fit the input 3x3"):
        ops.pool2d(X_3x3, 4)
    assert ops.pool2d(X_3x3, 4, padding=1).shape[-2:] == (2, 2)
