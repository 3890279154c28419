"""The fused Conv2D → ReLU → MaxPool2D unit must compute what the three layers compute one by one."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, get_loss
from xpnn.backends import native
from xpnn.layers import fused
from xpnn.layers.fused import ConvReluPool, Single, plan
from xpnn.reference import reference_model


@pytest.fixture(autouse=True, params=["numpy-twin", "native"])
def fused_kernels(request, monkeypatch):
    """Every test here runs on the im2col + GEMM twin and on native.c (where it was built)."""
    if request.param == "native" and not native.built():
        pytest.skip(f"native kernels {native.status()}")
    monkeypatch.setenv("XPNN_NATIVE", "1" if request.param == "native" else "0")
    return request.param


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
    monkeypatch.setattr(fused, "GPU_CHUNK_BYTES", 1)  # on CuPy too
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
    """No ConvReluPool: the pool runs as its own layer, after a ConvRelu unit (ConvUnitPool pairs them)."""
    model = Sequential([*layers, Flatten(), Dense(2)], dtype="float64").build((7, 7, 1), seed=0)
    units = plan(model.layers)
    assert not any(type(u) is ConvReluPool for u in units)
    (unit,) = [u for u in units if model.layers[2] in u.layers]
    assert type(unit) is fused.ConvUnitPool and type(unit.unit) is fused.ConvRelu


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("block", [(1, 1), (1, 2), (1, 4), (1, 8), (3, 1), (3, 2), (3, 8)])
def test_grouped_im2col_computes_the_convolution(stride, block):
    """Window-ordered rows of `group` adjacent outputs against the shifted kernel give conv2d's output (float64)."""
    from xpnn.layers.conv import conv2d_forward
    from xpnn.layers.fused import grouped_kernel, grouped_runs
    from xpnn.layers.padding import pads_2d
    from xpnn.layers.windows import pad_hw

    rng = np.random.default_rng(stride * 100 + block[0] * 10 + block[1])
    x, w = rng.standard_normal((2, 6 * stride, 16 * stride, 3)), rng.standard_normal((3, 4, 3, 5))
    conv = Conv2D(5, (3, 4), strides=stride, padding="same")
    expected, _ = conv2d_forward(x, w, None, (stride, stride), "same")
    assert expected.shape[1:3] == (6, 16)
    ph, pw = 3, 8  # pool windows tile the 6x16 output: 2x2 of them
    x_pad = pad_hw(x, pads_2d(x.shape[1:3], (3, 4), (stride, stride), "same"))
    (bh, bw), s = block, (stride, stride)
    runs = grouped_runs(x_pad, conv, (ph, pw), (2, 2), block)
    out = np.ascontiguousarray(runs).reshape(-1, runs.shape[-2] * runs.shape[-1]) @ grouped_kernel(w, block, s)
    # rows (n, i, j, block row, block column), columns (channel, a, b) -> NHWC
    got = out.reshape(2, 2, 2, ph // bh, pw // bw, 5, bh, bw).transpose(0, 1, 3, 6, 2, 4, 7, 5).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_results_do_not_depend_on_the_number_of_cpu_threads(monkeypatch):
    """Chunks are fixed by size, so 1 or 3 worker threads give bit-identical outputs and gradients."""
    monkeypatch.setattr(fused, "CHUNK_BYTES", 1 << 16)  # many chunks per batch, forward and backward
    monkeypatch.setattr(fused, "PARALLEL_MACS", 1)  # native.c: every call on every worker
    rng = np.random.default_rng(5)
    x, y = rng.random((9, 64, 64, 3)), rng.integers(0, 6, 9)
    passes = []
    for threads in ("1", "3"):
        monkeypatch.setenv("XPNN_CPU_THREADS", threads)
        passes.append(both_paths(reference_model("float32", seed=6), x, y)[0])
    one, three = passes
    assert np.array_equal(one.logits, three.logits)
    assert all(np.array_equal(a, b) for a, b in zip(one.grads, three.grads))


def test_run_kernels_equal_plain_copy_and_indexing(backend):
    """copy_runs / gather_runs (whole-run items on NumPy) against xp.copyto and fancy indexing, on strided views."""
    xp, kernels = backend.xp, backend.kernels
    x = backend.asarray(np.random.default_rng(0).standard_normal((2, 9, 10, 3)))
    sn, sh, sw, sc = x.strides
    view = xp.lib.stride_tricks.as_strided(x, (2, 4, 3, 2, 4 * 3), (sn, 2 * sh, 3 * sw, sh, sc))  # overlapping
    dst = xp.empty(view.shape, dtype=x.dtype)
    kernels.copy_runs(dst, view)
    assert backend.to_host(dst).tolist() == backend.to_host(view).tolist()
    moved = xp.empty((2, 3, 4, 2, 12), dtype=x.dtype)
    kernels.copy_runs(moved, view.transpose(0, 2, 1, 3, 4))
    assert backend.to_host(moved).tolist() == backend.to_host(view.transpose(0, 2, 1, 3, 4)).tolist()
    index = (backend.asarray(np.array([[1], [0]])), backend.asarray(np.array([[3, 0, 2]])))
    got = kernels.gather_runs(view, index)
    assert got.shape == (2, 3, 3, 2, 12)
    assert backend.to_host(got).tolist() == backend.to_host(view[index]).tolist()


def test_cpu_threads_setting_is_checked(monkeypatch):
    from xpnn.cpu_threads import cpu_workers

    monkeypatch.setenv("XPNN_CPU_THREADS", "two")
    with pytest.raises(ValueError, match="XPNN_CPU_THREADS must be a positive integer; received 'two'"):
        cpu_workers()
    monkeypatch.setenv("XPNN_CPU_THREADS", "4")
    assert cpu_workers() == 4


def test_a_failing_chunk_raises_in_the_caller():
    from xpnn.cpu_threads import map_chunks

    done = []

    def run_chunk(start, stop, worker):
        if start == 3:
            raise RuntimeError("chunk 3 failed")
        done.append(start)

    with pytest.raises(RuntimeError, match="chunk 3 failed"):
        map_chunks(run_chunk, 8, 1, workers=2)
    assert sorted(done) == [0, 1, 2, 4, 5, 6, 7]  # the failing worker stops; the other takes every chunk left


def test_every_chunk_runs_once_whichever_worker_takes_it():
    import threading

    from xpnn.cpu_threads import map_chunks

    seen, lock = [], threading.Lock()

    def run_chunk(start, stop, worker):
        with lock:
            seen.append((start, stop, worker))

    map_chunks(run_chunk, 103, 10, workers=3)
    assert sorted((a, b) for a, b, _ in seen) == [(s, min(103, s + 10)) for s in range(0, 103, 10)]
    assert {w for _, _, w in seen} <= {0, 1, 2}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dense_relu_pairs_run_as_one_unit_with_the_layers_bits(backend, dtype):
    """Dense → ReLU in place: the same logits and gradients, bit for bit, as the layers one by one."""
    model = Sequential([Dense(40), ReLU(), Dense(24, use_bias=False), ReLU(), Dense(3)], dtype=dtype)
    model.build((17,), seed=0)
    assert [type(u).__name__ for u in plan(model.layers)] == ["DenseRelu", "DenseRelu", "Single"]
    rng = np.random.default_rng(5)
    fast, slow = both_paths(model, rng.standard_normal((33, 17)), rng.integers(0, 3, 33))
    assert_same(fast, slow, 0.0)
    assert not any(type(u).__name__ == "DenseRelu" for u in plan([Dense(4, activation="relu"), ReLU()]))


@pytest.mark.parametrize("split", [True, False])
def test_inference_split_into_conv_and_pool_gives_the_units_values(split, fused_kernels, monkeypatch):
    """Wide convs infer as the implicit conv (+ b, ReLU in its epilogue) then the pool: on the native kernels the
    bits of the fused unit and of the layers (the twin's GEMMs differ in shape: float32 rounding), and a backward
    after an inference pass still matches."""
    monkeypatch.setattr(fused, "INFERENCE_SPLIT_MACS", 0 if split else 1 << 30)
    model = Sequential([Conv2D(32, 3, padding="same"), ReLU(), MaxPool2D(2), Flatten(), Dense(3)], dtype="float32")
    model.build((10, 8, 32), seed=1)
    assert type(plan(model.layers)[0]) is ConvReluPool
    rng = np.random.default_rng(2)
    model.layers[0].params["b"][...] = rng.standard_normal(32)
    xb, yb = model._prepare(rng.standard_normal((6, 10, 8, 32)), rng.integers(0, 3, 6))
    fast = model.forward(xb, training=False)[0]
    slow = model.forward(xb, record=True, training=False)[0]
    if fused_kernels == "native":
        np.testing.assert_array_equal(fast, slow)
    np.testing.assert_allclose(fast, slow, rtol=2e-5, atol=2e-5 * np.abs(slow).max())
    loss = get_loss("softmax_cross_entropy")
    a, b = model.run_pass(xb, yb, loss, training=False), model.run_pass(xb, yb, loss, record=True, training=False)
    for g, h in zip(a.grads, b.grads):
        np.testing.assert_allclose(g, h, rtol=2e-5, atol=2e-5 * np.abs(h).max())



@pytest.mark.parametrize(
    "layers",
    [
        [Conv2D(32, 5, padding="same"), ReLU(), MaxPool2D(3, strides=2, padding="same")],  # AlexNet-style
        [Conv2D(20, 3, padding="valid"), ReLU(), AvgPool2D(3, strides=2)],
        [Conv2D(16, 3, strides=2, padding="same"), xpnn.BatchNormalization(), ReLU(), MaxPool2D(2)],
    ],
)
def test_conv_units_pool_each_chunk_in_inference_with_the_layers_bits(layers, fused_kernels):
    """Inference pools each chunk of the conv output in cache (ConvUnitPool; on the twin the chunked conv, then
    the pool without winners): the layers' bits either way; training and a backward after an inference pass
    match the layers too."""
    model = Sequential([*layers, Flatten(), Dense(3)], dtype="float32").build((13, 12, 6), seed=3)
    assert type(plan(model.layers)[0]) is fused.ConvUnitPool
    rng = np.random.default_rng(4)
    model.layers[0].params["b"][...] = rng.standard_normal(model.layers[0].filters)
    xb, yb = model._prepare(rng.standard_normal((21, 13, 12, 6)), rng.integers(0, 3, 21))
    fast = model.forward(xb, training=False)[0]
    slow = model.forward(xb, record=True, training=False)[0]
    np.testing.assert_array_equal(fast, slow)
    loss = get_loss("softmax_cross_entropy")
    for training in (False, True):
        a = model.run_pass(xb, yb, loss, training=training)
        b = model.run_pass(xb, yb, loss, record=True, training=training)
        for g, h in zip(a.grads, b.grads):
            np.testing.assert_allclose(g, h, rtol=2e-5, atol=2e-5 * np.abs(h).max())
