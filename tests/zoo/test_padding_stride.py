"""The "Padding and Stride" worked examples: padded and strided cross-correlation, output shapes by
formula and by running the layers, and mirror padding (the section's exercise)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zoo.ops import reference, vectorised
from zoo.shapes import conv_output_shape, conv_output_size

X_3x3 = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
K_2x2 = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
PADDED_OUTPUT = torch.tensor(
    [[0.0, 3.0, 8.0, 4.0], [9.0, 19.0, 25.0, 10.0], [21.0, 37.0, 43.0, 16.0], [6.0, 7.0, 8.0, 0.0]]
)
STRIDED_OUTPUT = torch.tensor([[0.0, 8.0], [6.0, 8.0]])


def torch_corr2d(X: torch.Tensor, K: torch.Tensor, padding, stride) -> torch.Tensor:
    return nn.functional.conv2d(X[None, None], K[None, None], padding=padding, stride=stride)[0, 0]


IMPLEMENTATIONS = [
    pytest.param(reference.corr2d_padded_strided, id="reference"),
    pytest.param(vectorised.corr2d, id="vectorised"),
    pytest.param(torch_corr2d, id="torch"),
]


@pytest.mark.parametrize("corr2d", IMPLEMENTATIONS)
def test_padding_the_3x3_input_to_5x5(corr2d):
    torch.testing.assert_close(corr2d(X_3x3, K_2x2, 1, 1), PADDED_OUTPUT)


def test_first_padded_element_is_all_padding():
    # 0x0 + 0x1 + 0x2 + 0x3 = 0: the shaded window sits on the zero border and X[0, 0].
    padded = vectorised.pad2d(X_3x3, 1)
    assert padded.shape == (5, 5)
    assert padded[:2, :2].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert (padded[:2, :2] * K_2x2).sum() == 0 == PADDED_OUTPUT[0, 0]


@pytest.mark.parametrize("corr2d", IMPLEMENTATIONS)
def test_stride_3_vertically_and_2_horizontally(corr2d):
    torch.testing.assert_close(corr2d(X_3x3, K_2x2, 1, (3, 2)), STRIDED_OUTPUT)


def test_strided_elements_are_the_documents_sums():
    padded = vectorised.pad2d(X_3x3, 1)
    # 0x0 + 0x1 + 1x2 + 2x3 = 8 (second column: two columns to the right)
    assert padded[0:2, 2:4].flatten().tolist() == [0.0, 0.0, 1.0, 2.0]
    assert (padded[0:2, 2:4] * K_2x2).sum() == 0 * 0 + 0 * 1 + 1 * 2 + 2 * 3 == STRIDED_OUTPUT[0, 1]
    # 0x0 + 6x1 + 0x2 + 0x3 = 6 (second row: three rows down)
    assert padded[3:5, 0:2].flatten().tolist() == [0.0, 6.0, 0.0, 0.0]
    assert (padded[3:5, 0:2] * K_2x2).sum() == 0 * 0 + 6 * 1 + 0 * 2 + 0 * 3 == STRIDED_OUTPUT[1, 0]


# (kernel, padding per side, stride) on an 8x8 input -> output, as the documents print them.
SHAPE_EXAMPLES = [
    pytest.param(3, 1, 1, (8, 8), id="3x3-pad1"),
    pytest.param((5, 3), (2, 1), 1, (8, 8), id="5x3-pad2,1"),
    pytest.param(3, 1, 2, (4, 4), id="3x3-pad1-stride2"),
    pytest.param((3, 5), (0, 1), (3, 4), (2, 2), id="3x5-pad0,1-stride3,4"),
]


@pytest.mark.parametrize("kernel_size, padding, stride, expected", SHAPE_EXAMPLES)
def test_output_shapes_by_formula_and_by_running(kernel_size, padding, stride, expected):
    assert conv_output_shape((8, 8), kernel_size, padding, stride) == expected
    X = torch.rand(8, 8)
    conv2d = nn.Conv2d(1, 1, kernel_size=kernel_size, padding=padding, stride=stride)
    assert conv2d(X.reshape(1, 1, 8, 8)).shape[2:] == expected  # the documents' comp_conv2d
    kernel = torch.rand(conv2d.kernel_size)
    assert vectorised.corr2d(X, kernel, padding, stride).shape == expected
    assert reference.corr2d_padded_strided(X, kernel, padding, stride).shape == expected


def test_exercise_output_shape_of_the_3x5_strided_example():
    # floor((n_h - k_h + p_h + s_h) / s_h) x floor((n_w - k_w + p_w + s_w) / s_w) with p the total
    # padding: height floor((8 - 3 + 0 + 3) / 3) = 2, width floor((8 - 5 + 2 + 4) / 4) = 2.
    assert (8 - 3 + 0 + 3) // 3 == 2
    assert (8 - 5 + 2 + 4) // 4 == 2
    assert conv_output_size(8, 3, padding_total=0, stride=3) == 2
    assert conv_output_size(8, 5, padding_total=2, stride=4) == 2


def test_ten_5x5_convolutions_shrink_240_to_200():
    hw = (240, 240)
    for _ in range(10):
        hw = conv_output_shape(hw, 5)
    assert hw == (200, 200)
    # "slicing off 30% of the image"
    assert 1 - (200 * 200) / (240 * 240) == pytest.approx(0.3, abs=0.01)
    image = torch.rand(240, 240)
    kernel = torch.rand(5, 5)
    for _ in range(10):
        image = vectorised.corr2d(image, kernel)
    assert image.shape == (200, 200)


def test_padding_k_minus_1_keeps_the_shape():
    # p_h = k_h - 1 in total (half on each side for odd kernels) keeps the input size.
    for k in (1, 3, 5, 7):
        assert conv_output_shape((11, 9), k, (k - 1) // 2) == (11, 9)
        assert conv_output_size(11, k, padding_total=k - 1) == 11


# --- Mirror padding (exercise 3 of "Padding and Stride") ------------------------------------

X_1_TO_9 = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
# Border values mirrored around the edge row/column, which itself is not repeated.
X_1_TO_9_MIRRORED = torch.tensor(
    [
        [5.0, 4.0, 5.0, 6.0, 5.0],
        [2.0, 1.0, 2.0, 3.0, 2.0],
        [5.0, 4.0, 5.0, 6.0, 5.0],
        [8.0, 7.0, 8.0, 9.0, 8.0],
        [5.0, 4.0, 5.0, 6.0, 5.0],
    ]
)


def test_mirror_padding_worked_example():
    torch.testing.assert_close(reference.pad2d_reflect(X_1_TO_9, 1), X_1_TO_9_MIRRORED)
    torch.testing.assert_close(vectorised.pad2d(X_1_TO_9, 1, mode="reflect"), X_1_TO_9_MIRRORED)
    torch.testing.assert_close(nn.ReflectionPad2d(1)(X_1_TO_9[None, None])[0, 0], X_1_TO_9_MIRRORED)
    np.testing.assert_array_equal(np.pad(X_1_TO_9.numpy(), 1, mode="reflect"), X_1_TO_9_MIRRORED.numpy())


@pytest.mark.parametrize("padding", [(2, 1), (1, 3), (0, 2), (2, 0)])
def test_mirror_padding_rectangular_matches_numpy_and_torch(padding):
    X = torch.arange(20.0).reshape(4, 5)
    p_h, p_w = padding
    expected = torch.from_numpy(np.pad(X.numpy(), ((p_h, p_h), (p_w, p_w)), mode="reflect"))
    torch.testing.assert_close(reference.pad2d_reflect(X, padding), expected)
    torch.testing.assert_close(vectorised.pad2d(X, padding, mode="reflect"), expected)
    torch.testing.assert_close(nn.ReflectionPad2d((p_w, p_w, p_h, p_h))(X[None, None])[0, 0], expected)
    # Batched input (N, C, H, W) is padded image by image.
    batch = torch.stack([X, -X])[:, None]
    torch.testing.assert_close(vectorised.pad2d(batch, padding, mode="reflect")[1, 0], -expected)


def test_mirror_padding_then_convolution_keeps_the_shape_without_dark_borders():
    # Mirroring instead of zeros: a constant image stays constant after a normalised blur.
    image = torch.full((5, 6), 7.0)
    blur = torch.full((3, 3), 1.0 / 9)
    mirrored = vectorised.corr2d(vectorised.pad2d(image, 1, mode="reflect"), blur)
    zero_padded = vectorised.corr2d(image, blur, padding=1)
    assert mirrored.shape == zero_padded.shape == (5, 6)
    torch.testing.assert_close(mirrored, image)
    assert zero_padded[0, 0] < 7.0


@pytest.mark.parametrize("pad", [reference.pad2d_reflect, lambda X, p: vectorised.pad2d(X, p, mode="reflect")])
def test_mirror_padding_as_wide_as_the_input_is_refused(pad):
    with pytest.raises(ValueError, match="mirror padding"):
        pad(X_1_TO_9, 3)


def test_unknown_padding_mode_is_refused():
    with pytest.raises(ValueError, match="'zeros' or 'reflect'"):
        vectorised.pad2d(X_1_TO_9, 1, mode="circular")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: vectorised.pad2d(X_1_TO_9, -1), id="vectorised-pad2d"),
        pytest.param(lambda: vectorised.corr2d(X_1_TO_9, K_2x2, padding=-1), id="vectorised-corr2d"),
        pytest.param(lambda: reference.corr2d_padded_strided(X_1_TO_9, K_2x2, padding=-1), id="reference"),
        pytest.param(lambda: reference.pad2d_reflect(X_1_TO_9, (1, -1)), id="reference-reflect"),
        pytest.param(lambda: vectorised.pool2d(X_1_TO_9, 2, padding=-1), id="vectorised-pool"),
    ],
)
def test_negative_padding_is_refused(call):
    # torch's pad would silently crop instead.
    with pytest.raises(ValueError, match="padding must be non-negative"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: vectorised.corr2d(X_1_TO_9, K_2x2, stride=0), id="vectorised"),
        pytest.param(lambda: reference.corr2d_padded_strided(X_1_TO_9, K_2x2, stride=(1, 0)), id="reference"),
        pytest.param(lambda: reference.pool2d(X_1_TO_9, 2, stride=0), id="reference-pool"),
        pytest.param(lambda: conv_output_shape((3, 3), 2, 0, 0), id="shapes"),
    ],
)
def test_non_positive_stride_is_refused(call):
    with pytest.raises(ValueError, match="stride"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: reference.corr2d(torch.ones(2, 2), torch.ones(3, 3)), id="reference"),
        pytest.param(lambda: vectorised.corr2d(torch.ones(2, 2), torch.ones(3, 3)), id="vectorised"),
        pytest.param(lambda: vectorised.corr2d(torch.ones(2, 5), torch.ones(3, 1), padding=(0, 2)), id="too-high"),
        pytest.param(lambda: conv_output_shape((2, 2), 3), id="shapes"),
    ],
)
def test_kernel_larger_than_the_input_is_refused(call):
    with pytest.raises(ValueError, match="larger than the padded input|does not fit the input"):
        call()


def test_kernel_that_fits_once_padded_is_accepted():
    assert vectorised.corr2d(torch.ones(2, 2), torch.ones(3, 3), padding=1).shape == (2, 2)
