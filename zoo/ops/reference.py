"""The documents' nested-loop operations, kept as the readable definition of each result.

These follow the d2l code line for line (`corr2d`, `corr2d_multi_in`, `corr2d_multi_in_out`,
`corr2d_multi_in_out_1x1`, `pool2d`), extended only with the padding and stride that the chapters
describe in prose. They are slow on purpose: the vectorised module is checked against them.
"""
from __future__ import annotations

import torch

from zoo.ops._args import check_mode, check_padding, check_stride, check_window, pair


def corr2d(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Compute 2D cross-correlation (d2l section 7.2.1)."""
    h, w = K.shape
    check_window(X.shape[0], X.shape[1], (h, w), (0, 0), "kernel")
    Y = torch.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1), dtype=torch.result_type(X, K))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i : i + h, j : j + w] * K).sum()
    return Y


def corr2d_padded_strided(
    X: torch.Tensor,
    K: torch.Tensor,
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """Cross-correlation with zero padding on every side and a stride (d2l section 7.3)."""
    p_h, p_w = pair(padding, "padding")
    s_h, s_w = pair(stride, "stride")
    check_stride((s_h, s_w))
    h, w = K.shape
    check_window(X.shape[0], X.shape[1], (h, w), (p_h, p_w), "kernel")
    padded = torch.zeros((X.shape[0] + 2 * p_h, X.shape[1] + 2 * p_w), dtype=X.dtype)
    padded[p_h : p_h + X.shape[0], p_w : p_w + X.shape[1]] = X
    out_h = (padded.shape[0] - h) // s_h + 1
    out_w = (padded.shape[1] - w) // s_w + 1
    Y = torch.zeros((out_h, out_w), dtype=torch.result_type(X, K))
    for i in range(out_h):
        for j in range(out_w):
            Y[i, j] = (padded[i * s_h : i * s_h + h, j * s_w : j * s_w + w] * K).sum()
    return Y


def corr2d_multi_in(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Cross-correlate channel by channel and add the results up (d2l section 7.4.1)."""
    return sum(corr2d(x, k) for x, k in zip(X, K))


def corr2d_multi_in_out(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """One multi-input cross-correlation per output channel, stacked (d2l section 7.4.2)."""
    return torch.stack([corr2d_multi_in(X, k) for k in K], 0)


def corr2d_multi_in_out_1x1(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution is a fully connected layer applied at every pixel (d2l section 7.4.3)."""
    c_i, h, w = X.shape
    c_o = K.shape[0]
    X = X.reshape((c_i, h * w))
    K = K.reshape((c_o, c_i))
    return torch.matmul(K, X).reshape((c_o, h, w))


def pool2d(
    X: torch.Tensor,
    pool_size: int | tuple[int, int],
    mode: str = "max",
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Max or average pooling of a 2D tensor (d2l section 7.5).

    With the defaults (no padding, stride 1) this is the chapter's loop exactly. Padding adds zeros
    for average pooling (as torch's AvgPool2d counts them by default) and -inf for max pooling (so a
    padded cell never wins), and the stride defaults to 1 like the chapter's function; the built-in
    layers default the stride to the window size instead, which callers pass explicitly.
    """
    check_mode(mode)
    p_h, p_w = pair(pool_size, "pool_size")
    pad_h, pad_w = pair(padding, "padding")
    s_h, s_w = pair(stride if stride is not None else 1, "stride")
    check_stride((s_h, s_w))
    check_window(X.shape[0], X.shape[1], (p_h, p_w), (pad_h, pad_w), "pooling window")
    fill = float("-inf") if mode == "max" else 0.0
    padded = torch.full((X.shape[0] + 2 * pad_h, X.shape[1] + 2 * pad_w), fill, dtype=X.dtype)
    padded[pad_h : pad_h + X.shape[0], pad_w : pad_w + X.shape[1]] = X
    Y = torch.zeros(((padded.shape[0] - p_h) // s_h + 1, (padded.shape[1] - p_w) // s_w + 1), dtype=X.dtype)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            window = padded[i * s_h : i * s_h + p_h, j * s_w : j * s_w + p_w]
            if mode == "max":
                Y[i, j] = window.max()
            elif mode == "avg":
                Y[i, j] = window.mean()
    return Y


def conv2d_strict(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Strict convolution: flip the kernel both ways, then cross-correlate (d2l section 7.2.5)."""
    return corr2d(X, torch.flip(K, dims=(0, 1)))


def pad2d_reflect(X: torch.Tensor, padding: int | tuple[int, int]) -> torch.Tensor:
    """Mirror padding (the padding exercise): border values reflected, the edge itself not repeated."""
    p_h, p_w = pair(padding, "padding")
    check_padding((p_h, p_w))
    h, w = X.shape
    if p_h >= h or p_w >= w:
        raise ValueError(f"mirror padding {padding} must be smaller than the input {h}x{w}")
    Y = torch.zeros((h + 2 * p_h, w + 2 * p_w), dtype=X.dtype)
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            src_i = abs(i - p_h)
            src_j = abs(j - p_w)
            if src_i >= h:
                src_i = 2 * (h - 1) - src_i
            if src_j >= w:
                src_j = 2 * (w - 1) - src_j
            Y[i, j] = X[src_i, src_j]
    return Y
