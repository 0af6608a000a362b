"""Argument normalisation shared by the reference and vectorised operations."""
from __future__ import annotations

POOL_MODES = ("max", "avg")


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Accept `3` or `(3, 2)` the way torch.nn does, and refuse anything else clearly."""
    if isinstance(value, int):
        value = (value, value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def check_stride(stride: tuple[int, int]) -> None:
    # A zero stride would divide by zero in the output-size formula; a negative one has no meaning.
    if stride[0] < 1 or stride[1] < 1:
        raise ValueError(f"stride must be positive, got {stride}")


def check_padding(padding: tuple[int, int]) -> None:
    # torch's pad reads negative amounts as cropping, which no caller here wants silently.
    if padding[0] < 0 or padding[1] < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")


def check_window(
    height: int, width: int, window: tuple[int, int], padding: tuple[int, int], what: str
) -> None:
    """A window larger than the padded input has no valid position: say so instead of returning []."""
    if window[0] < 1 or window[1] < 1:
        raise ValueError(f"{what} size must be positive, got {window}")
    check_padding(padding)
    if window[0] > height + 2 * padding[0] or window[1] > width + 2 * padding[1]:
        raise ValueError(
            f"{what} {window} does not fit the input {height}x{width} with padding {padding}: "
            "use a smaller window or more padding"
        )


def check_mode(mode: str) -> None:
    if mode not in POOL_MODES:
        raise ValueError(f"pooling mode must be one of {POOL_MODES}, got {mode!r}")
