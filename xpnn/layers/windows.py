"""Sliding windows over NHWC arrays: the im2col view and its adjoint, shared by conv and pooling."""

from __future__ import annotations

from xpnn.backends import get_backend
from xpnn.types import Array


def pad_hw(x: Array, pads: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0) -> Array:
    """Pad the two spatial axes of NHWC `x` with `value` (no copy when there is nothing to pad).

    Fills only the border and copies the interior once: `xp.pad` took 4x longer on a batch of images.
    """
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    xp = get_backend().xp
    n, h, w, c = x.shape
    out = xp.empty((n, top + h + bottom, left + w + right, c), dtype=x.dtype)
    out[:, :top] = value
    out[:, top + h :] = value
    out[:, top : top + h, :left] = value
    out[:, top : top + h, left + w :] = value
    out[:, top : top + h, left : left + w] = x
    return out


def window_view(
    x_pad: Array,
    k_hw: tuple[int, int],
    s_hw: tuple[int, int],
    out_hw: tuple[int, int],
    d_hw: tuple[int, int] = (1, 1),
) -> Array:
    """A read-only strided view (n, out_h, out_w, fh, fw, c) of every window of padded NHWC input.

    `d_hw` is the dilation: a window's taps lie d apart (tf.nn.conv2d's `dilations`).
    """
    xp = get_backend().xp
    n, _, _, c = x_pad.shape
    sn, sh, sw, sc = x_pad.strides
    shape = (n, out_hw[0], out_hw[1], k_hw[0], k_hw[1], c)
    strides = (sn, sh * s_hw[0], sw * s_hw[1], sh * d_hw[0], sw * d_hw[1], sc)
    return xp.lib.stride_tricks.as_strided(x_pad, shape=shape, strides=strides)


def windows_add(
    patches: Array, padded_shape: tuple[int, ...], s_hw: tuple[int, int], d_hw: tuple[int, int] = (1, 1)
) -> Array:
    """Adjoint of `window_view`: sum (n, out_h, out_w, fh, fw, c) patches back into a padded array."""
    xp = get_backend().xp
    _, out_h, out_w, fh, fw, _ = patches.shape
    (sh, sw), (dh, dw) = s_hw, d_hw
    dx = xp.zeros(padded_shape, dtype=patches.dtype)
    for i in range(fh):
        for j in range(fw):
            top, left = i * dh, j * dw
            rows = slice(top, top + sh * (out_h - 1) + 1, sh)
            cols = slice(left, left + sw * (out_w - 1) + 1, sw)
            dx[:, rows, cols, :] += patches[:, :, :, i, j, :]
    return dx


def crop_hw(x_pad: Array, pads: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    """Undo `pad_hw`: the interior of a padded NHWC array."""
    (top, bottom), (left, right) = pads
    h, w = x_pad.shape[1], x_pad.shape[2]
    return x_pad[:, top : h - bottom, left : w - right, :]
