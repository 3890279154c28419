"""Conv2D's chunked CPU path (xpnn/layers/conv_chunks.py) against the one-GEMM path in conv.py, its twin."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import Conv2D, Sequential
from xpnn.layers import conv_chunks
from xpnn.layers.conv import ConvCache, conv2d_backward, conv2d_forward


@pytest.fixture(autouse=True)
def numpy_backend():
    return xpnn.set_backend("numpy")


GEOMETRIES = [
    # input (h, w, cin), filters, kernel, strides, padding
    ((32, 32, 3), 32, 3, 1, "same"),  # VGG-style first conv
    ((16, 16, 32), 64, 3, 2, "same"),  # strided all-conv
    ((13, 11, 5), 7, (3, 2), (2, 3), "same"),  # uneven SAME pads, odd sizes
    ((17, 17, 4), 6, 5, 3, "valid"),  # stride 3, cells no window reads
    ((9, 9, 8), 10, 1, 1, "valid"),  # 1x1
    ((8, 10, 2), 3, (4, 3), 1, "same"),  # even kernel: the odd pixel of SAME padding goes after
]


def layer(shape, filters, kernel, strides, padding, dtype, use_bias=True, seed=0) -> Conv2D:
    conv = Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=use_bias)
    Sequential([conv], dtype=dtype).build(shape, seed=seed)
    if use_bias:
        conv.params["b"][...] = np.random.default_rng(seed).standard_normal(filters)
    return conv


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chunked_conv_equals_the_one_gemm_twin(geometry, dtype, monkeypatch):
    monkeypatch.setattr(conv_chunks, "CHUNK_BYTES", 1 << 11)  # several chunks per batch
    shape, filters, kernel, strides, padding = geometry
    conv = layer(shape, filters, kernel, strides, padding, dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, *shape)).astype(dtype)
    out, cache = conv.forward(x)
    assert isinstance(cache, conv_chunks.ChunkedConvCache) and cache.chunk < len(x)
    ref_out, ref_cache = conv2d_forward(x, conv.params["w"], conv.params["b"], conv.strides, conv.padding)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, grads = conv.backward(dout, cache)
    ref_dx, ref_grads = conv2d_backward(dout, ref_cache)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for a, b in [(out, ref_out), (dx, ref_dx), (grads["w"], ref_grads["w"]), (grads["b"], ref_grads["b"])]:
        assert a.dtype == b.dtype == np.dtype(dtype) and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


def test_no_bias_and_no_input_gradient(monkeypatch):
    conv = layer((10, 10, 3), 4, 3, 2, "same", "float64", use_bias=False)
    x = np.random.default_rng(2).standard_normal((3, 10, 10, 3))
    out, cache = conv.forward(x)
    np.testing.assert_allclose(out, conv2d_forward(x, conv.params["w"], None, (2, 2), "same")[0], rtol=1e-12)
    dx, grads = conv.backward(np.ones_like(out), cache, need_dx=False)
    assert dx is None and set(grads) == {"w"}


@pytest.mark.parametrize("filters", [8, 16])  # 16: native.c's AVX-512 GEMM where the CPU has it, else BLAS
def test_results_do_not_depend_on_the_number_of_cpu_threads(filters, monkeypatch):
    """Chunks are fixed by size, and dW sums them in chunk order: 1 or 3 workers give the same bits."""
    monkeypatch.setattr(conv_chunks, "CHUNK_BYTES", 1 << 14)
    conv = layer((12, 12, 4), filters, 3, 1, "same", "float32")
    x = np.random.default_rng(3).standard_normal((9, 12, 12, 4)).astype(np.float32)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("XPNN_CPU_THREADS", threads)
        out, cache = conv.forward(x)
        results.append((out, *conv.backward(np.cos(out), cache)))
    (out1, dx1, g1), (out3, dx3, g3) = results
    assert np.array_equal(out1, out3) and np.array_equal(dx1, dx3)
    assert all(np.array_equal(g1[k], g3[k]) for k in g1)


def test_the_cache_keeps_the_input_not_the_columns():
    conv = layer((32, 32, 32), 32, 3, 1, "same", "float32")
    x = np.zeros((8, 32, 32, 32), dtype=np.float32)
    _, cache = conv.forward(x)
    assert cache.x is x  # 1 MiB, where the columns would be 9 MiB
    assert not isinstance(cache, ConvCache)


def test_conv_relu_unit_gives_the_layers_bits():
    """plan() runs Conv2D → ReLU as one ConvRelu unit; record=True runs the layers one by one: the same bits."""
    from xpnn import Dense, Flatten, ReLU, get_loss
    from xpnn.layers.fused import ConvRelu, plan

    layers = [Conv2D(6, 3, padding="same"), ReLU(), Conv2D(5, 3, strides=2), ReLU(), Flatten(), Dense(3)]
    model = Sequential(layers, dtype="float32").build((11, 11, 2), seed=4)
    assert [type(u).__name__ for u in plan(model.layers)] == ["ConvRelu", "ConvRelu", "Single", "Single"]
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 11, 11, 2)).astype(np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 6)]
    loss = get_loss("softmax_cross_entropy")
    fused, layered = model.run_pass(x, y, loss), model.run_pass(x, y, loss, record=True)
    assert np.array_equal(fused.logits, layered.logits)
    assert all(np.array_equal(a, b) for a, b in zip(fused.grads, layered.grads))
    assert ConvRelu.applies(layers[0], layers[1]) and not ConvRelu.applies(layers[1], layers[0])


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_chunked_input_gradient_equals_conv2d_input_grad(geometry, monkeypatch):
    """The fused unit's NumPy backward takes dx from conv2d_input_grad_chunked; its twin is conv2d_input_grad."""
    from xpnn.layers.conv import conv2d_input_grad
    from xpnn.layers.padding import pads_2d

    monkeypatch.setattr(conv_chunks, "CHUNK_BYTES", 1 << 11)
    shape, filters, kernel, strides, padding = geometry
    conv = layer(shape, filters, kernel, strides, padding, "float64")
    out, _ = conv.forward(np.zeros((4, *shape)))
    dout = np.random.default_rng(6).standard_normal(out.shape)
    pads = pads_2d(shape[:2], conv.kernel_size, conv.strides, conv.padding)
    padded = (4, shape[0] + sum(pads[0]), shape[1] + sum(pads[1]), shape[2])
    want = conv2d_input_grad(dout, conv.params["w"], padded, pads, conv.strides)
    got = conv_chunks.conv2d_input_grad_chunked(conv, dout, conv.params["w"], (4, *shape), pads, conv.strides)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_a_strided_input_gives_the_contiguous_result(padding):
    conv = layer((9, 9, 3), 4, 3, 1, padding, "float64")
    x = np.random.default_rng(7).standard_normal((3, 9, 9, 6))[..., ::2]  # every other channel: not contiguous
    out, cache = conv.forward(x)
    ref, ref_cache = conv.forward(np.ascontiguousarray(x))
    assert np.array_equal(out, ref)
    dout = np.cos(out)
    (dx, g), (ref_dx, ref_g) = conv.backward(dout, cache), conv.backward(dout, ref_cache)
    assert np.array_equal(dx, ref_dx) and all(np.array_equal(g[k], ref_g[k]) for k in g)


@pytest.mark.skipif(not conv_chunks.native.built(), reason="native kernels not built")
@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_native_col2im_gives_the_strided_adds_bits(geometry, dtype, monkeypatch):
    """native_conv.h's col2im against _add_windows' NumPy loop: the same sums in the same order, bit for bit."""
    from xpnn.layers.conv_chunks import _add_windows, _Buffers
    from xpnn.layers.padding import output_size, pads_2d

    shape, filters, kernel, strides, padding = geometry
    conv = layer(shape, filters, kernel, strides, padding, dtype)
    (fh, fw), (sh, sw) = conv.kernel_size, conv.strides
    out_hw = (output_size(shape[0], fh, sh, padding), output_size(shape[1], fw, sw, padding))
    pads = pads_2d(shape[:2], (fh, fw), (sh, sw), padding)
    dcols = np.random.default_rng(8).standard_normal((3 * out_hw[0] * out_hw[1], fh * fw * shape[2])).astype(dtype)
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv("XPNN_NATIVE", flag)
        dx = np.full((4, *shape), np.nan, dtype=dtype)
        _add_windows(_Buffers(conv), dcols, dx, 1, 4, conv.params["w"].shape, pads, (sh, sw), out_hw, 0)
        results.append(dx[1:])
    assert not np.isnan(results[1]).any()
    np.testing.assert_array_equal(
        results[0].view(f"u{results[0].itemsize}"), results[1].view(f"u{results[1].itemsize}")
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_conv_with_relu_activation_gives_conv_then_relu_bits(dtype, use_bias):
    """Conv2D(activation="relu") runs the ReLU in the chunks (forward epilogue, backward chunks): the bits of a
    linear Conv2D followed by a ReLU layer."""
    from xpnn import ReLU

    fused = Conv2D(16, 3, strides=2, padding="same", activation="relu", use_bias=use_bias)
    plain, relu = Conv2D(16, 3, strides=2, padding="same", use_bias=use_bias), ReLU()
    Sequential([fused], dtype=dtype).build((11, 9, 4), seed=3)
    Sequential([plain, relu], dtype=dtype).build((11, 9, 4), seed=3)
    for key in fused.params:
        values = np.random.default_rng(4).standard_normal(fused.params[key].shape)
        fused.params[key][...], plain.params[key][...] = values, values
    x = np.random.default_rng(5).standard_normal((6, 11, 9, 4)).astype(dtype)
    out, cache = fused.forward(x)
    assert isinstance(cache.inner, conv_chunks.ChunkedConvCache) and cache.act is out
    mid, plain_cache = plain.forward(x)
    ref, relu_cache = relu.forward(mid)
    assert np.array_equal(out, ref) and (out == 0).any()
    dout = np.cos(out)
    dx, grads = fused.backward(dout, cache)
    ref_dx, ref_grads = plain.backward(relu.backward(dout, relu_cache)[0], plain_cache)
    assert np.array_equal(dx, ref_dx) and set(grads) == set(ref_grads)
    assert all(np.array_equal(grads[k], ref_grads[k]) for k in grads)
