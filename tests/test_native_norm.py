"""BatchNormalization's native passes (native_norm.h) against their NumPy twin, and the fused BatchNorm → ReLU unit.

The native loops promise the twin's bits: the same blocked sums in the same order, each product and sum
rounded as NumPy rounds it (no fused multiply-adds), so native-vs-twin and thread-count comparisons are
exact. The twin itself is held to the pre-blocking formula (plain NumPy reductions) and, elsewhere, to
TensorFlow (tests/test_layer_fixtures.py, tests/test_tf_fixtures.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import (
    BatchNormalization,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
    Sequential,
    get_loss,
)
from xpnn.backends import native
from xpnn.layers import normalization
from xpnn.layers.fused import Single, plan
from xpnn.layers.fused_norm import BatchNormRelu, ConvBatchNormRelu

needs_native = pytest.mark.skipif(not native.built(), reason=f"native kernels {native.status()}")

SHAPES = [
    (64, 30, 30, 32),  # the BatchNorm CNN's first BN: 57 600 rows, 113 blocks of 512 rows, the last shorter
    (5, 7, 9, 3),  # odd sizes, one short block
    (4, 3, 130),  # 130 channels: blocks of 126 rows
    (40_000, 1),  # one channel after Dense: blocks of 16 384 rows, summed in order (not pairwise)
    (6, 5),  # Dense-after: rows = the batch
    (1, 1, 1, 7),  # a single row
]


def assert_same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(f"u{a.itemsize}"), b.view(f"u{b.itemsize}"))


def built_layer(shape, dtype, seed=0, **kwargs):
    """A built BatchNormalization with gamma, beta and moving statistics away from their defaults."""
    layer = BatchNormalization(**kwargs)
    Sequential([layer], dtype=dtype).build(shape[1:])
    rng = np.random.default_rng(seed)
    for key, w in layer.weights.items():
        w[...] = rng.uniform(0.5, 1.5, w.shape).astype(dtype) if key != "moving_mean" else rng.standard_normal(w.shape)
    return layer


def bn_pass(shape, dtype, training, relu, need_dx=True, seed=0, **kwargs):
    """out, dx, the gradients and the moving statistics of one forward and backward of a fresh layer."""
    layer = built_layer(shape, dtype, seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    out, cache = layer.forward(x, training=training, relu=relu)
    dx, grads = layer.backward(rng.standard_normal(shape).astype(dtype), cache, need_dx)
    return [out, dx, *grads.values(), *layer.non_trainable.values()]


def on_both(monkeypatch, fn, *args, **kwargs):
    """fn(...) on the NumPy twin (XPNN_NATIVE=0), then on the native passes."""
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("XPNN_NATIVE", flag)
        results.append(fn(*args, **kwargs))
    return results


@needs_native
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_native_passes_give_the_twins_bits(shape, dtype, training, relu, monkeypatch):
    twin, fast = on_both(monkeypatch, bn_pass, shape, dtype, training, relu)
    assert len(twin) == len(fast) == 6
    for a, b in zip(fast, twin):
        assert_same_bits(a, b)


@needs_native
@pytest.mark.parametrize("kwargs", [{"center": False}, {"scale": False}, {"center": False, "scale": False}])
@pytest.mark.parametrize("training", [True, False])
def test_without_gamma_or_beta_and_without_dx(kwargs, training, monkeypatch):
    for need_dx in (True, False):
        twin, fast = on_both(monkeypatch, bn_pass, (3, 5, 4, 6), "float64", training, True, need_dx, **kwargs)
        assert (fast[1] is None) == (twin[1] is None) == (not need_dx)
        for a, b in zip(fast, twin):
            if a is not None:
                assert_same_bits(a, b)


@needs_native
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_threads_and_chunks_never_change_a_bit(dtype, monkeypatch):
    """Blocks are fixed by the shape: one worker or two, many chunks or one, the sums are the same."""
    monkeypatch.setenv("XPNN_NATIVE", "1")
    results = []
    for threads, parallel in (("1", 1 << 19), ("2", 1), ("2", 1 << 19), ("3", 1000)):
        monkeypatch.setenv("XPNN_CPU_THREADS", threads)
        monkeypatch.setattr(normalization, "PARALLEL_VALUES", parallel)
        results.append(bn_pass((16, 30, 30, 32), dtype, True, True))
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            assert_same_bits(a, b)


@needs_native
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("flags", [("1", "0"), ("0", "1")])
def test_relu_mask_recomputed_from_x_gives_the_kept_outputs_bits(flags, training, monkeypatch):
    """The native forward keeps no output: the backward masks by x·inv + shift > 0, natively or on the twin."""
    shape, results = (7, 6, 5, 9), []
    for forward_flag, backward_flag in (flags, ("0", "0")):
        layer = built_layer(shape, "float32")
        rng = np.random.default_rng(8)
        x, dout = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
        monkeypatch.setenv("XPNN_NATIVE", forward_flag)
        out, cache = layer.forward(x, training=training, relu=True)
        assert (cache.out is None) == (forward_flag == "1")
        monkeypatch.setenv("XPNN_NATIVE", backward_flag)
        results.append([out, *layer.backward(dout, cache)[:1], *layer.backward(dout, cache)[1].values()])
    for a, b in zip(*results):
        assert_same_bits(a, b)


def old_twin(x, gamma, beta, mean, var, epsilon, axes, training, dout):
    """The layer's math before blocked sums and recomputed xhat (plain NumPy reductions): an independent oracle."""
    rstd = 1.0 / np.sqrt(var + epsilon)
    inv = rstd * gamma
    out = x * inv + (beta - mean * inv)
    xhat = (x - mean) * rstd
    dbeta = dout.sum(axis=axes, keepdims=True)
    dgamma = (dout * xhat).sum(axis=axes, keepdims=True)
    count = dout.size // dbeta.size
    scale = rstd * gamma
    dx = scale * (dout - dbeta / count - xhat * (dgamma / count)) if training else dout * scale
    return out, dx, dgamma.reshape(-1), dbeta.reshape(-1)


@pytest.mark.parametrize("native_flag", ["0", pytest.param("1", marks=needs_native)])
@pytest.mark.parametrize("shape,axis", [((64, 30, 30, 32), -1), ((7, 5, 3), -1), ((3, 4, 5, 6), 1), ((9, 4), -1)])
@pytest.mark.parametrize("training", [True, False])
def test_twin_and_native_agree_with_plain_numpy_reductions(shape, axis, training, native_flag, monkeypatch):
    monkeypatch.setenv("XPNN_NATIVE", native_flag)
    layer = built_layer(shape, "float64", axis=axis)
    rng = np.random.default_rng(5)
    x, dout = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape)
    axes = layer._axes
    if training:
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    else:
        mean, var = layer._b("moving_mean"), layer._b("moving_variance")
    expected = old_twin(x, layer._b("gamma"), layer._b("beta"), mean, var, layer.epsilon, axes, training, dout)
    out, cache = layer.forward(x, training=training)
    dx, grads = layer.backward(dout, cache)
    for got, want in zip((out, dx, grads["gamma"], grads["beta"]), expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_float32_sums_stay_accurate_over_a_long_batch():
    """Blocked float32 sums of 57 600 rows stay within 1e-6 of the float64 moments, where one float32 sum in row
    order (the layer's NumPy reductions before blocks) drifts past 5e-6."""
    x = np.random.default_rng(2).uniform(0.0, 1.0, (64, 30, 30, 32)).astype(np.float32) + np.float32(3.0)
    x64 = x.astype(np.float64)
    exact_mean, exact_var = x64.mean(axis=(0, 1, 2)), x64.var(axis=(0, 1, 2))
    mean, var = normalization.moments(x, (0, 1, 2))
    np.testing.assert_allclose(mean.reshape(-1), exact_mean, rtol=1e-6)
    np.testing.assert_allclose(var.reshape(-1), exact_var, rtol=1e-6)
    plain = x.mean(axis=(0, 1, 2))
    assert np.abs(plain / exact_mean - 1).max() > 5e-6  # the drift the blocks avoid


# ---- the fused BatchNormalization → ReLU unit -----------------------------------------------------------------
def bn_cnn(dtype, seed=4, **bn_kwargs):
    """The BatchNorm CNN's pattern: conv → BN → ReLU → pool, twice, BN → ReLU after a Dense, then logits."""
    layers = [
        Conv2D(6, 3), BatchNormalization(**bn_kwargs), ReLU(), MaxPool2D(2),
        Conv2D(5, 3), BatchNormalization(**bn_kwargs), ReLU(), Flatten(),
        Dense(7), BatchNormalization(**bn_kwargs), ReLU(), Dense(3),
    ]  # fmt: skip
    return Sequential(layers, dtype=dtype).build((10, 9, 2), seed=seed)


def test_plan_pairs_batchnorm_with_the_relu_after_it():
    model = bn_cnn("float64")
    units = plan(model.layers)
    inner = [type(getattr(u, "unit", u)) for u in units]  # the first conv unit pools in inference (ConvUnitPool)
    assert inner.count(ConvBatchNormRelu) == 2 and inner.count(BatchNormRelu) == 1  # the Dense's BN: a pair
    assert all(type(u) is Single for u in plan(model.layers, fuse=False))
    lone = Sequential([BatchNormalization(), Dense(2), BatchNormalization()]).build((4,))
    assert [type(u) for u in plan(lone.layers)] == [Single, Single, Single]


@pytest.mark.parametrize("native_flag", ["0", pytest.param("1", marks=needs_native)])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_fused_unit_matches_layer_by_layer(dtype, rtol, native_flag, monkeypatch):
    """Training passes (fused vs `record`): logits, every gradient and the moving statistics; then inference."""
    monkeypatch.setenv("XPNN_NATIVE", native_flag)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 10, 9, 2)), rng.integers(0, 3, 6)
    fused, layered = bn_cnn(dtype), bn_cnn(dtype)
    loss = get_loss("softmax_cross_entropy")
    passes = []
    for model, record in ((fused, False), (layered, True)):
        xb, yb = model._prepare(x, y)
        passes.append(model.run_pass(xb, yb, loss, record=record))
    fast, slow = passes
    np.testing.assert_allclose(fast.logits, slow.logits, rtol=rtol, atol=rtol)
    for a, b in zip(fast.grads, slow.grads):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())
    for a, b in zip(fused.get_weights(), layered.get_weights()):  # the moving statistics moved alike
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol)
    xb, _ = fused._prepare(x, y)
    inference = [m.forward(xb, record=r, training=False)[0] for m, r in ((fused, False), (layered, True))]
    np.testing.assert_allclose(inference[0], inference[1], rtol=rtol, atol=rtol)


@pytest.mark.parametrize("native_flag", ["0", pytest.param("1", marks=needs_native)])
@pytest.mark.parametrize("training", [True, False])
def test_fused_relu_keeps_nan_and_relu_grad_semantics(training, native_flag, monkeypatch):
    """A NaN input stays NaN through the ReLU; a NaN gradient where the output is 0 gives NaN (TF's ReluGrad)."""
    monkeypatch.setenv("XPNN_NATIVE", native_flag)
    rng = np.random.default_rng(3)
    x, dout = rng.standard_normal((4, 3, 3, 5)), rng.standard_normal((4, 3, 3, 5))
    if not training:
        x[0, 0, 0, 0] = np.nan
    dout[1, 1, 1, :] = np.nan
    norm, relu = built_layer(x.shape, "float64"), ReLU()
    out, cache = BatchNormRelu(norm, relu).forward(x, training=training)
    dx, grads = BatchNormRelu(norm, relu).backward(dout, cache)
    ref_layer = built_layer(x.shape, "float64")
    y, y_cache = ref_layer.forward(x, training=training)
    ref_out, _ = relu.forward(y)
    ref_d, _ = relu.backward(dout, ref_out)
    ref_dx, ref_grads = ref_layer.backward(ref_d, y_cache)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)
    np.testing.assert_array_equal(grads[0]["gamma"], ref_grads["gamma"])
    assert grads[1] == {}
    assert np.isnan(dx).any()


def test_fused_unit_on_the_cupy_standin_matches_numpy(standin, monkeypatch):
    """The CuPy path runs the twin (no NumPy-only calls): fused and layer-by-layer agree with NumPy's bits."""
    monkeypatch.setenv("XPNN_NATIVE", "0")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 10, 9, 2)), rng.integers(0, 3, 5)
    loss = get_loss("softmax_cross_entropy")
    expected = bn_cnn("float64").run_pass(*bn_cnn("float64")._prepare(x, y), loss)
    backend = xpnn.set_backend("cupy")
    for record in (False, True):
        model = bn_cnn("float64")
        xb, yb = model._prepare(backend.asarray(x), backend.asarray(y))
        got = model.run_pass(xb, yb, loss, record=record)
        np.testing.assert_allclose(backend.to_host(got.logits), expected.logits, rtol=1e-12)
        for a, b in zip(got.grads, expected.grads):
            np.testing.assert_allclose(backend.to_host(a), b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


@needs_native
def test_native_wrappers_check_every_array():
    x = np.zeros((4, 3))
    vec = np.zeros(3)
    with pytest.raises(ValueError, match="out"):
        native.bn_apply(x, vec, vec, False, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="inv"):
        native.bn_apply(x, vec.astype(np.float32), vec, False, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="x"):
        native.bn_block_sums(np.zeros((3, 4)).T, None, 2, 1, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="partial"):
        native.bn_block_sums(x, None, 2, 1, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="mean"):
        native.bn_block_sums(x, vec, 2, 2, np.zeros((2, 3)))  # 2 lanes read 6 means
    with pytest.raises(ValueError, match="multiple of lanes"):
        native.bn_block_sums(x, None, 3, 2, np.zeros((2, 3)))


# ---- Conv2D → BatchNormalization → ReLU: inference in the conv's epilogue ---------------------------------------
@pytest.mark.parametrize("native_flag", ["0", pytest.param("1", marks=needs_native)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cout, strides, padding", [(16, 1, "same"), (7, 2, "valid"), (40, 1, "valid")])
def test_conv_batchnorm_relu_inference_has_the_layers_bits(cout, strides, padding, dtype, native_flag, monkeypatch):
    """The epilogue's + b, · inv + shift, max(·, 0) round as the three layers do: the same bits, float32 on the
    implicit conv (native_igemm.h) and float64 on the columns' path; a backward after it matches too."""
    monkeypatch.setenv("XPNN_NATIVE", native_flag)
    layers = [Conv2D(cout, 3, strides=strides, padding=padding), BatchNormalization(), ReLU(), Flatten(), Dense(3)]
    model = Sequential(layers, dtype=dtype).build((11, 10, 5), seed=2)
    rng = np.random.default_rng(3)
    for key, w in layers[1].weights.items():  # moving statistics and gamma/beta away from their defaults
        w[...] = rng.uniform(0.5, 1.5, w.shape) if key != "moving_mean" else rng.standard_normal(w.shape)
    layers[0].params["b"][...] = rng.standard_normal(cout)
    assert type(plan(model.layers)[0]) is ConvBatchNormRelu  # no pool after it: the unit alone
    x = rng.standard_normal((9, 11, 10, 5))
    xb, yb = model._prepare(x, rng.integers(0, 3, 9))
    fused, _, _ = model.forward(xb, training=False)
    layered, _, _ = model.forward(xb, record=True, training=False)
    assert_same_bits(fused, layered)
    assert (np.asarray(model.forward(xb, record=True, training=False)[2][2]) == 0).any()  # the ReLU clipped some
    loss = get_loss("softmax_cross_entropy")
    a = model.run_pass(xb, yb, loss, training=False)
    b = model.run_pass(xb, yb, loss, record=True, training=False)
    for g, h in zip(a.grads, b.grads):
        assert_same_bits(g, h)
