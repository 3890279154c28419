"""Slow, obvious references written independently of xpnn: nested loops over explicit padding."""

from __future__ import annotations

import math

import numpy as np


def tf_same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's SAME padding, from its documentation's formula."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def conv2d_loops(x, w, b, stride, padding):
    n, h, wd, cin = x.shape
    fh, fw, _, cout = w.shape
    sh, sw = stride
    if padding == "same":
        (t, bo), (le, r) = tf_same_pads(h, fh, sh), tf_same_pads(wd, fw, sw)
    else:
        t = bo = le = r = 0
    xp = np.zeros((n, h + t + bo, wd + le + r, cin))
    xp[:, t : t + h, le : le + wd] = x
    oh = (xp.shape[1] - fh) // sh + 1
    ow = (xp.shape[2] - fw) // sw + 1
    out = np.zeros((n, oh, ow, cout))
    for i in range(n):
        for a in range(oh):
            for c in range(ow):
                for f in range(cout):
                    window = xp[i, a * sh : a * sh + fh, c * sw : c * sw + fw, :]
                    out[i, a, c, f] = np.sum(window * w[:, :, :, f]) + b[f]
    return out


def pool_loops(x, k, stride, padding, mode):
    """Max or average pool; padded cells are skipped (never win, never counted)."""
    n, h, wd, c = x.shape
    (kh, kw), (sh, sw) = k, stride
    if padding == "same":
        (t, _), (le, _) = tf_same_pads(h, kh, sh), tf_same_pads(wd, kw, sw)
        oh, ow = math.ceil(h / sh), math.ceil(wd / sw)
    else:
        t = le = 0
        oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    out = np.zeros((n, oh, ow, c))
    for a in range(oh):
        for bcol in range(ow):
            r0, c0 = a * sh - t, bcol * sw - le
            rows = [r for r in range(r0, r0 + kh) if 0 <= r < h]
            cols = [q for q in range(c0, c0 + kw) if 0 <= q < wd]
            window = x[:, rows][:, :, cols]
            out[:, a, bcol] = window.max(axis=(1, 2)) if mode == "max" else window.mean(axis=(1, 2))
    return out
