"""Forward results against independent nested-loop references, TF's asymmetric SAME pads included."""

from __future__ import annotations

import numpy as np
import pytest
from reference_impls import conv2d_loops, pool_loops, tf_same_pads

from xpnn.layers.conv import conv2d_forward
from xpnn.layers.padding import output_size, pads_1d
from xpnn.layers.pool import avgpool_forward, maxpool_forward

CONFIGS = [  # (h, w, k, stride, padding)
    (5, 5, 3, 1, "same"),
    (6, 7, 2, 1, "same"),
    (7, 6, 3, 2, "same"),
    (8, 8, 4, 3, "same"),
    (9, 7, 3, 3, "valid"),
    (6, 6, 2, 2, "valid"),
    (7, 7, 4, 1, "valid"),
    (5, 8, 1, 2, "same"),
]


def test_reference_network_conv1_pads_one_before_two_after():
    # conv 4x4, stride 1, SAME on 64: total 3, TF puts the odd pixel bottom/right.
    assert pads_1d(64, 4, 1, "same") == (1, 2)
    # pool 8/8 and 4/4 SAME on 64 and 8 need no padding; conv 2x2 pads (0, 1).
    assert pads_1d(64, 8, 8, "same") == (0, 0)
    assert pads_1d(8, 2, 1, "same") == (0, 1)


@pytest.mark.parametrize("size", range(1, 20))
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("s", [1, 2, 3, 8])
def test_same_pads_match_tensorflow_formula(size, k, s):
    assert pads_1d(size, k, s, "same") == tf_same_pads(size, k, s)
    assert output_size(size, k, s, "same") == -(-size // s)


@pytest.mark.parametrize("h,w,k,s,padding", CONFIGS)
def test_conv2d_matches_loops(h, w, k, s, padding):
    rng = np.random.default_rng(h * 31 + w)
    x = rng.standard_normal((2, h, w, 3))
    wt = rng.standard_normal((k, k, 3, 4))
    b = rng.standard_normal(4)
    out, _ = conv2d_forward(x, wt, b, (s, s), padding)
    np.testing.assert_allclose(out, conv2d_loops(x, wt, b, (s, s), padding), rtol=1e-12, atol=1e-12)


def test_conv2d_rectangular_kernel_and_strides():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 8, 2))
    wt = rng.standard_normal((3, 2, 2, 3))
    b = rng.standard_normal(3)
    out, _ = conv2d_forward(x, wt, b, (2, 3), "same")
    np.testing.assert_allclose(out, conv2d_loops(x, wt, b, (2, 3), "same"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h,w,k,s,padding", CONFIGS)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_matches_loops(h, w, k, s, padding, mode):
    rng = np.random.default_rng(h * 17 + w)
    x = rng.standard_normal((2, h, w, 3)) - 3.0  # all negative: a zero-padded max would be wrong
    forward = maxpool_forward if mode == "max" else avgpool_forward
    out, _ = forward(x, (k, k), (s, s), padding)
    np.testing.assert_allclose(out, pool_loops(x, (k, k), (s, s), padding, mode), rtol=1e-12, atol=1e-12)


def test_maxpool_ties_go_to_first_cell_in_row_major_order():
    from xpnn.layers.pool import maxpool_backward

    x = np.zeros((1, 2, 2, 1))
    out, cache = maxpool_forward(x, (2, 2), (2, 2), "valid")
    dx = maxpool_backward(np.ones_like(out), cache)
    assert dx[0, :, :, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
