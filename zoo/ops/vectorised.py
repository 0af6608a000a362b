"""Vectorised cross-correlation and pooling that autograd and the ONNX exporter can handle.

Each output is built by shift-and-accumulate: for every kernel offset (a, b), take the input
shifted by (a, b) as one strided slice and add it, weighted by K[a, b]. The loop runs over the
kernel (a handful of offsets, fixed at trace time), never over pixels, so the traced graph is a
few Slice/Mul/Add nodes whose sizes follow the input's height and width symbolically.

Inputs may carry any leading dimensions: (H, W), (N, H, W), or (N, C, H, W) for the channel forms.
"""
from __future__ import annotations

import torch

from zoo.ops._args import check_mode, check_padding, check_stride, check_window, pair


def pad2d(X: torch.Tensor, padding: int | tuple[int, int], mode: str = "zeros") -> torch.Tensor:
    """Pad the last two dimensions on every side with zeros or by mirroring (reflection)."""
    p_h, p_w = pair(padding, "padding")
    check_padding((p_h, p_w))
    if mode == "zeros":
        if p_h == 0 and p_w == 0:
            return X
        return torch.nn.functional.pad(X, (p_w, p_w, p_h, p_h))
    if mode != "reflect":
        raise ValueError(f"padding mode must be 'zeros' or 'reflect', got {mode!r}")
    h, w = X.shape[-2], X.shape[-1]
    if p_h >= h or p_w >= w:
        raise ValueError(f"mirror padding {padding} must be smaller than the input {h}x{w}")
    # Mirror without repeating the edge row/column, like numpy's 'reflect' and torch's ReflectionPad2d.
    if p_h:
        X = torch.cat([X[..., 1 : p_h + 1, :].flip(-2), X, X[..., -p_h - 1 : -1, :].flip(-2)], dim=-2)
    if p_w:
        X = torch.cat([X[..., :, 1 : p_w + 1].flip(-1), X, X[..., :, -p_w - 1 : -1].flip(-1)], dim=-1)
    return X


def _shifted(X: torch.Tensor, a: int, b: int, window: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """The input seen from kernel offset (a, b): one strided slice covering every output position."""
    height, width = X.shape[-2], X.shape[-1]
    return X[
        ...,
        a : height - window[0] + 1 + a : stride[0],
        b : width - window[1] + 1 + b : stride[1],
    ]


def _prepare(X: torch.Tensor, window: tuple[int, int], padding, stride, what: str):
    pad = pair(padding, "padding")
    step = pair(stride, "stride")
    check_stride(step)
    if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
        check_window(int(X.shape[-2]), int(X.shape[-1]), window, pad, what)
    return pad, step


def corr2d(
    X: torch.Tensor,
    K: torch.Tensor,
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """2D cross-correlation of (..., H, W) with a (kh, kw) kernel, zero padding and stride."""
    if K.dim() != 2:
        raise ValueError(f"kernel must be 2D (kh, kw), got shape {tuple(K.shape)}")
    window = (int(K.shape[0]), int(K.shape[1]))
    pad, step = _prepare(X, window, padding, stride, "kernel")
    X = pad2d(X, pad)
    Y = None
    for a in range(window[0]):
        for b in range(window[1]):
            term = _shifted(X, a, b, window, step) * K[a, b]
            Y = term if Y is None else Y + term
    return Y


def corr2d_multi_in(
    X: torch.Tensor,
    K: torch.Tensor,
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """(..., C_i, H, W) cross-correlated with (C_i, kh, kw), summed over channels: (..., H', W')."""
    return corr2d_multi_in_out(X, K.unsqueeze(0), padding, stride).squeeze(-3)


def corr2d_multi_in_out(
    X: torch.Tensor,
    K: torch.Tensor,
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] = 1,
) -> torch.Tensor:
    """(..., C_i, H, W) with a (C_o, C_i, kh, kw) kernel: (..., C_o, H', W')."""
    if K.dim() != 4:
        raise ValueError(f"kernel must be 4D (C_o, C_i, kh, kw), got shape {tuple(K.shape)}")
    if X.dim() < 3 or X.shape[-3] != K.shape[1]:
        raise ValueError(
            f"input has {X.shape[-3] if X.dim() >= 3 else 'no'} channels but the kernel expects "
            f"{K.shape[1]}: input shape {tuple(X.shape)}, kernel shape {tuple(K.shape)}"
        )
    window = (int(K.shape[2]), int(K.shape[3]))
    pad, step = _prepare(X, window, padding, stride, "kernel")
    X = pad2d(X, pad)
    Y = None
    for a in range(window[0]):
        for b in range(window[1]):
            # Mixing channels at one offset is a matrix product over C_i, applied at every pixel.
            term = torch.einsum("...chw,oc->...ohw", _shifted(X, a, b, window, step), K[:, :, a, b])
            Y = term if Y is None else Y + term
    return Y


def corr2d_multi_in_out_1x1(X: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """The 1x1 convolution as one matrix product: (C_o, C_i) times (..., C_i, H*W)."""
    c_o, c_i = int(K.shape[0]), int(K.shape[1])
    if K.shape[2:] != (1, 1):
        raise ValueError(f"a 1x1 convolution needs a (C_o, C_i, 1, 1) kernel, got {tuple(K.shape)}")
    flat = X.flatten(-2)
    Y = torch.matmul(K.reshape(c_o, c_i), flat)
    return Y.unflatten(-1, (X.shape[-2], X.shape[-1]))


def conv2d_strict(X: torch.Tensor, K: torch.Tensor, padding=0, stride=1) -> torch.Tensor:
    """Strict convolution: the cross-correlation with the kernel flipped both ways."""
    return corr2d(X, torch.flip(K, dims=(-2, -1)), padding, stride)


def pool2d(
    X: torch.Tensor,
    pool_size: int | tuple[int, int],
    mode: str = "max",
    padding: int | tuple[int, int] = 0,
    stride: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Max or average pooling over the last two dimensions; same conventions as the reference.

    The stride defaults to 1 as in the chapter's `pool2d`; pass `stride=pool_size` for the
    non-overlapping windows that torch's pooling layers use by default.
    """
    check_mode(mode)
    window = pair(pool_size, "pool_size")
    pad, step = _prepare(X, window, padding, stride if stride is not None else 1, "pooling window")
    if pad != (0, 0):
        fill = float("-inf") if mode == "max" else 0.0
        X = torch.nn.functional.pad(X, (pad[1], pad[1], pad[0], pad[0]), value=fill)
    Y = None
    for a in range(window[0]):
        for b in range(window[1]):
            part = _shifted(X, a, b, window, step)
            if Y is None:
                Y = part
            elif mode == "max":
                Y = torch.maximum(Y, part)
            else:
                Y = Y + part
    return Y if mode == "max" else Y / (window[0] * window[1])
