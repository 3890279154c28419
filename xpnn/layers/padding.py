"""TensorFlow's VALID and SAME padding arithmetic, in one place.

SAME: out = ceil(in / stride); total = max((out - 1) * stride + k - in, 0), split with
the odd pixel at the bottom/right (tensorflow/core/framework/kernel_shape_util.cc).
"""

from __future__ import annotations

from xpnn.types import Padding

PADDINGS = ("valid", "same")


def normalize_padding(padding: str) -> Padding:
    """'SAME'/'same' -> 'same'; anything else but VALID is a ValueError naming the choices."""
    key = str(padding).strip().lower() if isinstance(padding, str) else None
    if key not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; use 'valid' or 'same' (TensorFlow's names).")
    return key  # type: ignore[return-value]


def output_size(in_size: int, k: int, stride: int, padding: Padding) -> int:
    """Output length of one spatial axis, as TensorFlow computes it (0 when VALID does not fit)."""
    if padding == "same":
        return -(-in_size // stride)
    return max((in_size - k) // stride + 1, 0)


def pads_1d(in_size: int, k: int, stride: int, padding: Padding) -> tuple[int, int]:
    """(before, after) padding of one axis; SAME puts the odd pixel after."""
    if padding == "valid":
        return 0, 0
    total = max((output_size(in_size, k, stride, padding) - 1) * stride + k - in_size, 0)
    return total // 2, total - total // 2


def pads_2d(
    in_hw: tuple[int, int], k_hw: tuple[int, int], s_hw: tuple[int, int], padding: Padding
) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) for an NHWC input of spatial size `in_hw`."""
    return (pads_1d(in_hw[0], k_hw[0], s_hw[0], padding), pads_1d(in_hw[1], k_hw[1], s_hw[1], padding))
