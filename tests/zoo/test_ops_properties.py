"""Property-based agreement: vectorised ops against the documents' loops and torch's kernels, on
random shapes, kernels, paddings, strides and modes. Sizes stay small so the loops are fast."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from zoo.ops import reference, vectorised

PROPERTY_SETTINGS = settings(max_examples=50, deadline=None)


@st.composite
def windowed_problems(draw, max_size: int = 7, max_window: int = 4, max_channels: int = 1):
    """An input size, a window that fits it once padded, the padding and the stride, and a seed."""
    height = draw(st.integers(1, max_size))
    width = draw(st.integers(1, max_size))
    pad_h = draw(st.integers(0, 2))
    pad_w = draw(st.integers(0, 2))
    window_h = draw(st.integers(1, min(max_window, height + 2 * pad_h)))
    window_w = draw(st.integers(1, min(max_window, width + 2 * pad_w)))
    return {
        "hw": (height, width),
        "window": (window_h, window_w),
        "padding": (pad_h, pad_w),
        "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        "channels": (draw(st.integers(1, max_channels)), draw(st.integers(1, max_channels))),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def random(shape, seed: int) -> torch.Tensor:
    # float64 so that the different summation orders agree to tight tolerances.
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@PROPERTY_SETTINGS
@given(windowed_problems())
def test_corr2d_vectorised_equals_reference_loops(problem):
    X = random(problem["hw"], problem["seed"])
    K = random(problem["window"], problem["seed"] + 1)
    expected = reference.corr2d_padded_strided(X, K, problem["padding"], problem["stride"])
    torch.testing.assert_close(vectorised.corr2d(X, K, problem["padding"], problem["stride"]), expected)
    torch.testing.assert_close(
        F.conv2d(X[None, None], K[None, None], padding=problem["padding"], stride=problem["stride"])[0, 0], expected
    )
    if problem["padding"] == (0, 0) and problem["stride"] == (1, 1):
        torch.testing.assert_close(reference.corr2d(X, K), expected)


@PROPERTY_SETTINGS
@given(windowed_problems(), st.sampled_from(["max", "avg"]))
def test_pool2d_vectorised_equals_reference_loops(problem, mode):
    X = random(problem["hw"], problem["seed"])
    args = dict(mode=mode, padding=problem["padding"], stride=problem["stride"])
    expected = reference.pool2d(X, problem["window"], **args)
    torch.testing.assert_close(vectorised.pool2d(X, problem["window"], **args), expected)


@PROPERTY_SETTINGS
@given(windowed_problems(), st.sampled_from(["max", "avg"]))
def test_pool2d_equals_torch_where_torch_accepts_the_padding(problem, mode):
    window, padding = problem["window"], problem["padding"]
    # torch's pooling layers take at most half the window as padding.
    padding = (min(padding[0], window[0] // 2), min(padding[1], window[1] // 2))
    X = random((2, 3, *problem["hw"]), problem["seed"])
    torch_pool = F.max_pool2d if mode == "max" else F.avg_pool2d
    expected = torch_pool(X, window, stride=problem["stride"], padding=padding)
    torch.testing.assert_close(vectorised.pool2d(X, window, mode, padding, problem["stride"]), expected)


@PROPERTY_SETTINGS
@given(windowed_problems(max_size=5, max_window=3, max_channels=3))
def test_multi_channel_correlation_equals_torch_and_the_loops(problem):
    c_in, c_out = problem["channels"]
    X = random((2, c_in, *problem["hw"]), problem["seed"])
    K = random((c_out, c_in, *problem["window"]), problem["seed"] + 1)
    got = vectorised.corr2d_multi_in_out(X, K, problem["padding"], problem["stride"])
    torch.testing.assert_close(got, F.conv2d(X, K, padding=problem["padding"], stride=problem["stride"]))
    if problem["padding"] == (0, 0) and problem["stride"] == (1, 1):
        torch.testing.assert_close(got[0], reference.corr2d_multi_in_out(X[0], K))
        per_image = torch.stack([reference.corr2d_multi_in(image, K[0]) for image in X])
        torch.testing.assert_close(vectorised.corr2d_multi_in(X, K[0]), per_image)


@PROPERTY_SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_1x1_convolution_forms_agree(c_in, c_out, height, width, seed):
    X = random((c_in, height, width), seed)
    K = random((c_out, c_in, 1, 1), seed + 1)
    expected = reference.corr2d_multi_in_out(X, K)
    torch.testing.assert_close(reference.corr2d_multi_in_out_1x1(X, K), expected)
    torch.testing.assert_close(vectorised.corr2d_multi_in_out_1x1(X, K), expected)
    torch.testing.assert_close(vectorised.corr2d_multi_in_out_1x1(X[None], K)[0], expected)


@PROPERTY_SETTINGS
@given(windowed_problems())
def test_strict_convolution_is_correlation_with_the_flipped_kernel(problem):
    X = random(problem["hw"], problem["seed"])
    K = random(problem["window"], problem["seed"] + 1)
    flipped = torch.flip(K, dims=(0, 1))
    if problem["window"][0] <= problem["hw"][0] and problem["window"][1] <= problem["hw"][1]:
        torch.testing.assert_close(reference.conv2d_strict(X, K), reference.corr2d(X, flipped))
    torch.testing.assert_close(
        vectorised.conv2d_strict(X, K, problem["padding"], problem["stride"]),
        reference.corr2d_padded_strided(X, flipped, problem["padding"], problem["stride"]),
    )


@PROPERTY_SETTINGS
@given(
    st.integers(2, 7),
    st.integers(2, 7),
    st.data(),
    st.integers(0, 2**31 - 1),
)
def test_mirror_padding_forms_agree(height, width, data, seed):
    p_h = data.draw(st.integers(0, height - 1))
    p_w = data.draw(st.integers(0, width - 1))
    X = random((height, width), seed)
    expected = np.pad(X.numpy(), ((p_h, p_h), (p_w, p_w)), mode="reflect")
    np.testing.assert_array_equal(reference.pad2d_reflect(X, (p_h, p_w)).numpy(), expected)
    np.testing.assert_array_equal(vectorised.pad2d(X, (p_h, p_w), mode="reflect").numpy(), expected)


@PROPERTY_SETTINGS
@given(windowed_problems(max_size=5, max_window=3))
def test_gradients_through_vectorised_corr2d_equal_torch_conv2d(problem):
    X = random((2, 1, *problem["hw"]), problem["seed"]).requires_grad_(True)
    K = random(problem["window"], problem["seed"] + 1).requires_grad_(True)
    upstream_seed = problem["seed"] + 2
    out = vectorised.corr2d(X, K, problem["padding"], problem["stride"])
    upstream = random(tuple(out.shape), upstream_seed)
    grad_x, grad_k = torch.autograd.grad(out, (X, K), upstream)
    twin = F.conv2d(X, K[None, None], padding=problem["padding"], stride=problem["stride"])
    twin_grad_x, twin_grad_k = torch.autograd.grad(twin, (X, K), upstream)
    torch.testing.assert_close(grad_x, twin_grad_x)
    torch.testing.assert_close(grad_k, twin_grad_k)
