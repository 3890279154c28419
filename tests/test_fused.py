"""The fused Conv2D → ReLU → MaxPool2D unit must compute what the three layers compute one by one."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, get_loss
from xpnn.layers import fused
from xpnn.layers.fused import ConvReluPool, Single, plan
from xpnn.reference import reference_model


def both_paths(model, x, y):
    """(fused, layer-by-layer) passes on the same prepared arrays, with non-zero biases."""
    rng = np.random.default_rng(7)
    model.set_weights([w if w.ndim > 1 else 0.1 * rng.standard_normal(w.shape) for w in model.get_weights()])
    loss = get_loss("softmax_cross_entropy")
    xb, yb = model._prepare(x, y)
    return model.run_pass(xb, yb, loss), model.run_pass(xb, yb, loss, record=True)


def assert_same(fast, slow, rtol):
    np.testing.assert_allclose(
        xpnn.get_backend().to_host(fast.logits), xpnn.get_backend().to_host(slow.logits), rtol=rtol
    )
    for a, b in zip(fast.grads, slow.grads):
        a, b = xpnn.get_backend().to_host(a), xpnn.get_backend().to_host(b)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_reference_network_plans_two_fused_units():
    units = plan(reference_model().layers)
    assert [type(u) for u in units] == [ConvReluPool, ConvReluPool, Single, Single]
    assert all(type(u) is Single for u in plan(reference_model().layers, fuse=False))


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_fused_matches_layer_by_layer_on_the_reference_network(backend, dtype, rtol):
    rng = np.random.default_rng(3)
    model = reference_model(dtype, seed=2)
    x, y = rng.random((5, 64, 64, 3)), rng.integers(0, 6, 5)
    assert_same(*both_paths(model, x, y), rtol)


def test_ties_go_to_the_first_cell_as_in_the_unfused_pool(backend, monkeypatch):
    """Flat image regions give equal conv outputs in a window; the first one must win, chunked or not."""
    monkeypatch.setattr(fused, "CHUNK_BYTES", 1)  # one image per GEMM
    model = reference_model("float64", seed=4)
    x = np.zeros((3, 64, 64, 3))
    x[:, 8:40, 16:48] = 0.5
    x[1, ::7] = 1.0
    assert_same(*both_paths(model, x, np.array([0, 3, 5])), 1e-12)


def test_valid_padding_and_strided_conv_are_fused_when_the_windows_tile():
    model = Sequential(
        [Conv2D(3, 3, strides=2, padding="valid"), ReLU(), MaxPool2D(3), Flatten(), Dense(2)], dtype="float64"
    ).build((13, 13, 2), seed=0)
    assert type(plan(model.layers)[0]) is ConvReluPool
    rng = np.random.default_rng(0)
    assert_same(*both_paths(model, rng.standard_normal((4, 13, 13, 2)), rng.integers(0, 2, 4)), 1e-12)


@pytest.mark.parametrize(
    "layers",
    [
        [Conv2D(2, 3, padding="same"), ReLU(), MaxPool2D(3, strides=2, padding="same")],  # overlapping windows
        [Conv2D(2, 3, padding="same"), ReLU(), MaxPool2D(3, padding="same")],  # 7 is not 3 whole windows
        [Conv2D(2, 3, padding="same"), ReLU(), AvgPool2D(7)],
    ],
)
def test_other_patterns_run_layer_by_layer(layers):
    model = Sequential([*layers, Flatten(), Dense(2)], dtype="float64").build((7, 7, 1), seed=0)
    assert all(type(u) is Single for u in plan(model.layers))


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("group", [1, 2, 4, 8])
def test_grouped_im2col_computes_the_convolution(stride, group):
    """Window-ordered rows of `group` adjacent outputs against the shifted kernel give conv2d's output (float64)."""
    from xpnn.layers.conv import conv2d_forward
    from xpnn.layers.fused import grouped_kernel, grouped_runs
    from xpnn.layers.padding import pads_2d
    from xpnn.layers.windows import pad_hw

    rng = np.random.default_rng(stride * 10 + group)
    x, w = rng.standard_normal((2, 6 * stride, 16 * stride, 3)), rng.standard_normal((3, 4, 3, 5))
    conv = Conv2D(5, (3, 4), strides=stride, padding="same")
    expected, _ = conv2d_forward(x, w, None, (stride, stride), "same")
    assert expected.shape[1:3] == (6, 16)
    ph, pw = 3, 8  # pool windows tile the 6x16 output: 2x2 of them
    x_pad = pad_hw(x, pads_2d(x.shape[1:3], (3, 4), (stride, stride), "same"))
    runs = grouped_runs(x_pad, conv, (ph, pw), (2, 2), group)
    out = np.ascontiguousarray(runs).reshape(-1, runs.shape[-2] * runs.shape[-1]) @ grouped_kernel(w, group, stride)
    # rows (n, i, j, window row, group), columns (channel, output in group) -> NHWC
    got = out.reshape(2, 2, 2, ph, pw // group, 5, group).transpose(0, 1, 3, 2, 4, 6, 5).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
