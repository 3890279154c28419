"""Issue 14's layers through the public API: bad input, modes, state, saving, registration, fusion, erf."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import xpnn
from xpnn import regularizers
from xpnn.backends import numpy_backend
from xpnn.io import layer_configs, layers_from_configs
from xpnn.layers import (
    ELU,
    GELU,
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Reshape,
    SeparableConv2D,
    ZeroPadding2D,
    layer_classes,
    register_keras_serializable,
)
from xpnn.layers.conv import conv2d_backward, conv2d_forward
from xpnn.layers.fused import ConvReluPool, plan
from xpnn.layers.pool import maxpool_backward, maxpool_forward


# ---- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Dropout(-0.1), r"rate in \[0, 1\).*rate=-0.1"),
        (lambda: Dropout(1.0), r"rate in \[0, 1\)"),
        (lambda: Dropout("0.5"), r"rate"),
        (lambda: Dropout(0.5, seed=-1), r"seed"),
        (lambda: Conv2D(6, 3, groups=4), r"filters must be divisible by groups.*filters=6, groups=4"),
        (lambda: Conv2D(6, 3, groups=0), r"groups"),
        (lambda: Conv2D(4, 3, strides=2, dilation_rate=2), r"strides > 1 .*dilation_rate > 1"),
        (lambda: DepthwiseConv2D(3, strides=(1, 2), dilation_rate=(2, 1)), r"strides > 1"),
        (lambda: Conv2D(4, 3, activation="rleu"), r"unknown activation 'rleu'.*Did you mean 'relu'"),
        (lambda: Dense(4, activation="gelue"), r"Did you mean 'gelu'"),
        (lambda: Activation("sigmod"), r"Did you mean 'sigmoid'"),
        (lambda: Reshape((2, -1, -1)), r"at most one -1"),
        (lambda: Reshape((0, 3)), r"positive"),
        (lambda: ZeroPadding2D(-1), r"padding"),
        (lambda: ZeroPadding2D((1, 2, 3)), r"padding"),
        (lambda: LeakyReLU(-0.1), r"negative_slope"),
        (lambda: BatchNormalization(momentum=1.5), r"momentum"),
        (lambda: BatchNormalization(epsilon=0.0), r"epsilon"),
        (lambda: DepthwiseConv2D(3, depth_multiplier=0), r"depth_multiplier"),
        (lambda: regularizers.L2(-1.0), r"l2 must be a non-negative"),
        (lambda: regularizers.get("l1_l3"), r"unknown regularizer 'l1_l3'.*Did you mean 'l1_l2'"),
        (lambda: Conv2D(4, 3, kernel_regularizer="l22"), r"unknown regularizer"),
    ],
)
def test_bad_arguments_say_what_and_how(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize(
    "layers,shape,match",
    [
        ([Conv2D(4, 3, groups=2)], (6, 6, 3), r"3 channels must be divisible by groups=2"),
        ([Reshape((5, 5))], (4, 6), r"holds 25 values but each sample has 24"),
        ([Reshape((-1, 5))], (4, 6), r"not a multiple of 5"),
        ([BatchNormalization(axis=0)], (4, 3), r"axis=0 is not a feature axis"),
        ([Conv2D(2, 3, dilation_rate=3)], (6, 6, 1), r"dilated span \(7, 7\)"),
        ([GlobalAveragePooling2D()], (6, 3), r"NHWC"),
    ],
)
def test_bad_shapes_at_build(layers, shape, match):
    with pytest.raises(ValueError, match=match):
        xpnn.Sequential(layers).build(shape)


# ---- erf --------------------------------------------------------------------------------------------------------
def test_erf_and_erfc_are_float64_exact():
    x = np.concatenate([np.linspace(-7, 7, 20001), np.geomspace(1e-300, 1, 500), -np.geomspace(1e-300, 1, 500)])
    erf = np.array([math.erf(v) for v in x])
    erfc = np.array([math.erfc(v) for v in x])
    rel = np.abs(numpy_backend.erf(x) - erf) / np.maximum(np.abs(erf), 1e-300)
    assert rel.max() <= 1e-15
    small = x < 26  # erfc's relative error grows with x² through exp(-x²), as Cephes' does
    relc = np.abs(numpy_backend.erfc(x) - erfc)[small] / erfc[small]
    assert relc.max() <= 5e-14
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 40.0, -40.0])
    np.testing.assert_array_equal(numpy_backend.erf(special), [1.0, -1.0, np.nan, 0.0, -0.0, 1.0, -1.0])
    np.testing.assert_array_equal(numpy_backend.erfc(special), [0.0, 2.0, np.nan, 1.0, 1.0, 0.0, 2.0])
    assert np.signbit(numpy_backend.erf(np.array([-0.0])))[0]


def test_gelu_keeps_its_tiny_negative_tail():
    x = np.array([-30.0, -10.0, -5.0])
    out, _ = GELU().fn.forward(x)
    expected = np.array([0.5 * v * math.erfc(-v * float(np.float32(0.7071067811865476))) for v in x])
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    assert (out < 0).all()


# ---- Dropout ------------------------------------------------------------------------------------------------------
def _dropout_model(seed_layer=None, dtype="float64"):
    return xpnn.Sequential([Flatten(), Dropout(0.5, seed=seed_layer), Dense(3)], dtype=dtype).build((4, 5, 2), seed=3)


def test_dropout_is_inverted_in_training_and_identity_in_inference():
    layer = Dropout(0.25, seed=1)
    layer.build((50, 40), np.random.default_rng(0), np.dtype("float64"))
    x = np.random.default_rng(1).standard_normal((8, 50, 40))
    out, _ = layer.forward(x, training=True)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / 0.75, rtol=1e-15)
    assert abs(kept.mean() - 0.75) < 0.02
    assert layer.forward(x, training=False)[0] is x
    assert layer.forward(x)[0] is x  # inference by default


def test_dropout_same_seed_same_masks_and_other_weights_untouched():
    x = np.random.default_rng(2).standard_normal((6, 4, 5, 2))
    a, b = _dropout_model(), _dropout_model()
    out_a = a.forward(x, training=True)[0]
    np.testing.assert_array_equal(out_a, b.forward(x, training=True)[0])
    assert not np.array_equal(out_a, a.forward(x, training=True)[0])  # the stream moves on
    plain = xpnn.Sequential([Flatten(), Dense(3)], dtype="float64").build((4, 5, 2), seed=3)
    np.testing.assert_array_equal(plain.get_weights()[0], a.get_weights()[0])  # spawn draws nothing from rng

    def mask(model):
        return model.forward(x, record=True, training=True)[2][1] != 0

    other = xpnn.Sequential([Flatten(), Dropout(0.5), Dense(3)], dtype="float64").build((4, 5, 2), seed=4)
    assert not np.array_equal(mask(other), mask(_dropout_model()))
    np.testing.assert_array_equal(mask(_dropout_model()), mask(_dropout_model()))


def test_dropout_state_resumes_the_stream_exactly():
    x = np.random.default_rng(3).standard_normal((6, 4, 5, 2))
    model = _dropout_model(seed_layer=11)
    model.forward(x, training=True)
    state = json.loads(json.dumps(model.get_state()))  # JSON-friendly
    expected = model.forward(x, training=True)[0]
    fresh = _dropout_model(seed_layer=11)
    fresh.set_state(state)
    np.testing.assert_array_equal(fresh.forward(x, training=True)[0], expected)


@pytest.mark.parametrize(
    "state", [{"rng": {"bit_generator": "MT19937", "state": {}}}, {"rng": {"bit_generator": "PCG64"}}, {}, "seed"]
)
def test_dropout_refuses_a_foreign_state(state):
    layer = Dropout(0.5, seed=1)
    with pytest.raises(ValueError, match="PCG64"):
        layer.set_state(state)


# ---- BatchNormalization -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,names",
    [
        ({}, ["gamma", "beta", "moving_mean", "moving_variance"]),
        ({"scale": False}, ["beta", "moving_mean", "moving_variance"]),
        ({"center": False}, ["gamma", "moving_mean", "moving_variance"]),
        ({"center": False, "scale": False}, ["moving_mean", "moving_variance"]),
    ],
)
def test_batchnorm_weights_in_keras_order(kwargs, names):
    layer = BatchNormalization(**kwargs)
    xpnn.Sequential([layer]).build((3, 4, 5))
    assert list(layer.weights) == names
    assert list(layer.params) == [n for n in names if not n.startswith("moving")]


def test_batchnorm_moves_stats_in_training_only_and_fit_leaves_them_to_the_forward():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((32, 6, 6, 2)) * 3 + 1
    y = rng.integers(0, 3, 32)
    model = xpnn.Sequential(
        [Conv2D(4, 3, padding="same"), BatchNormalization(), ReLU(), GlobalAveragePooling2D(), Dense(3)],
        dtype="float64",
    ).build((6, 6, 2), seed=1)
    bn = model.layers[1]
    before = [w.copy() for w in model.get_weights()]
    model.predict(x)
    model.evaluate(x, y)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    conv_out = model.layers[0].forward(x)[0]
    model.forward(x, training=True)
    np.testing.assert_allclose(bn.non_trainable["moving_mean"], 0.01 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(bn.non_trainable["moving_variance"], 0.99 + 0.01 * conv_out.var(axis=(0, 1, 2)))
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert not np.allclose(bn.non_trainable["moving_mean"], 0.01 * conv_out.mean(axis=(0, 1, 2)))
    assert len(model.parameters()) == 6  # conv w, b, gamma, beta, dense w, b: the moving stats are not trained


# ---- other layers -------------------------------------------------------------------------------------------------
def test_global_max_pool_shares_ties_and_spreads_nan_like_tensorflow():
    x = np.zeros((1, 2, 2, 2))
    x[0, 0, 0, 0] = x[0, 1, 1, 0] = 3.0
    x[0, 1, 0, 1] = np.nan
    layer = GlobalMaxPooling2D()
    out, cache = layer.forward(x)
    dx, _ = layer.backward(np.ones((1, 2)), cache)
    np.testing.assert_array_equal(out, [[3.0, np.nan]])
    np.testing.assert_array_equal(dx[0, :, :, 0], [[0.5, 0.0], [0.0, 0.5]])
    assert np.isnan(dx[0, :, :, 1]).all()


def test_maxpool_backward_routes_a_nan_gradient_to_the_winner_only():
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    _, cache = maxpool_forward(x, (2, 2), (2, 2), "valid")
    dout = np.array([[[[np.nan], [1.0]], [[2.0], [3.0]]]])
    dx = maxpool_backward(dout, cache)[0, :, :, 0]
    assert np.isnan(dx[1, 1]) and np.isnan(dx).sum() == 1
    assert dx[1, 3] == 1.0 and dx[3, 1] == 2.0 and dx[3, 3] == 3.0


def test_conv2d_with_zero_output_channels_does_not_crash():
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 3))
    out, cache = conv2d_forward(x, np.zeros((3, 3, 3, 0)), np.zeros(0), (1, 1), "same")
    dx, grads = conv2d_backward(np.zeros(out.shape), cache)
    assert out.shape == (2, 5, 5, 0) and grads["w"].shape == (3, 3, 3, 0) and grads["b"].shape == (0,)
    np.testing.assert_array_equal(dx, np.zeros_like(x))


def test_depthwise_is_per_channel_and_separable_is_depthwise_then_pointwise():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 6, 3))
    dw = DepthwiseConv2D(3, padding="same", depth_multiplier=2)
    xpnn.Sequential([dw], dtype="float64").build((6, 6, 3))
    out = dw.forward(x)[0]
    for c in range(3):
        for m in range(2):
            single = Conv2D(1, 3, padding="same")
            xpnn.Sequential([single], dtype="float64").build((6, 6, 1))
            o = c * 2 + m  # TF's channel order
            single.params = {"w": dw.params["w"][:, :, c : c + 1, m : m + 1], "b": dw.params["b"][o : o + 1]}
            np.testing.assert_allclose(out[..., c * 2 + m], single.forward(x[..., c : c + 1])[0][..., 0], rtol=1e-13)
    sep = SeparableConv2D(4, 3, padding="same", depth_multiplier=2)
    xpnn.Sequential([sep], dtype="float64").build((6, 6, 3))
    assert list(sep.params) == ["depthwise_kernel", "pointwise_kernel", "b"]
    dw.params = {"w": sep.params["depthwise_kernel"], "b": np.zeros(6)}
    expected = dw.forward(x)[0] @ sep.params["pointwise_kernel"][0, 0] + sep.params["b"]
    np.testing.assert_allclose(sep.forward(x)[0], expected, rtol=1e-13)


def test_fusion_declines_for_anything_but_a_plain_conv():
    def units(conv):
        model = xpnn.Sequential([conv, ReLU(), MaxPool2D(2), Flatten(), Dense(2)]).build((8, 8, 2))
        return [type(u).__name__ for u in plan(model.layers)]

    assert units(Conv2D(4, 3, padding="same"))[0] == "ConvReluPool"
    for conv in (
        Conv2D(4, 3, padding="same", dilation_rate=2),
        Conv2D(4, 3, padding="same", groups=2),
        Conv2D(4, 3, padding="same", activation="tanh"),
        DepthwiseConv2D(3, padding="same"),
    ):
        assert units(conv)[0] == "Single", conv
        assert not ConvReluPool.applies(conv, ReLU(), MaxPool2D(2))


# ---- configs, saving, registration --------------------------------------------------------------------------------
def every_layer() -> list[Layer]:
    return [
        ZeroPadding2D(((1, 0), (0, 1))),
        Conv2D(4, 3, padding="same", dilation_rate=2, activation="elu", kernel_regularizer=regularizers.L2(0.001)),
        BatchNormalization(momentum=0.9),
        LeakyReLU(0.1),
        Conv2D(4, 3, groups=2, activation="swish", bias_regularizer="l1"),
        DepthwiseConv2D(2, depth_multiplier=2, activation="gelu"),
        SeparableConv2D(3, 2, padding="same", depth_multiplier=2, depthwise_regularizer={"class_name": "L1L2"}),
        ELU(0.5),
        GELU(approximate=True),
        Dropout(0.3, seed=2),
        Activation("softplus"),
        GlobalMaxPooling2D(keepdims=True),
        Reshape((-1,)),
        Dense(6, activation="softmax", kernel_regularizer="l1_l2"),
    ]


def test_configs_are_json_and_rebuild_the_same_layers():
    layers = every_layer()
    model = xpnn.Sequential(layers, dtype="float64").build((7, 6, 3), seed=1)
    configs = json.loads(json.dumps(layer_configs(model)))
    again = layers_from_configs(configs)
    assert [repr(a) for a in again] == [repr(b) for b in layers]
    assert again[1].regularizers == {"w": regularizers.L2(0.001)}
    assert again[6].regularizers == {"depthwise_kernel": regularizers.L1L2()}
    assert configs[4]["config"]["activation"] == "silu"


def test_a_model_with_every_new_layer_saves_and_loads(tmp_path):
    x = np.random.default_rng(6).standard_normal((3, 7, 6, 3))
    model = xpnn.Sequential(every_layer(), dtype="float64").build((7, 6, 3), seed=1)
    model.forward(x, training=True)  # moves BatchNormalization's statistics
    model.save(tmp_path / "m.h5")
    loaded = xpnn.load_model(tmp_path / "m.h5")
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x), loaded.predict(x))


def test_registered_custom_layers_load_again(tmp_path):
    @register_keras_serializable(package="Tests")
    class TimesTwo(Layer):
        def __init__(self, factor: float = 2.0) -> None:
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor, None

        def backward(self, dout, cache, need_dx=True):
            return dout * self.factor, {}

        def get_config(self):
            return {"factor": self.factor}

    assert layer_classes()["TimesTwo"] is TimesTwo and layer_classes()["Tests>TimesTwo"] is TimesTwo
    model = xpnn.Sequential([Flatten(), TimesTwo(3.0), Dense(2)]).build((2, 2, 1))
    model.save(tmp_path / "custom.h5")
    loaded = xpnn.load_model(tmp_path / "custom.h5")
    assert loaded.layers[1].factor == 3.0


def test_unregistered_custom_layers_and_taken_names_are_refused(tmp_path):
    class Doubler(Layer):
        def forward(self, x):
            return x * 2.0, None

    xpnn.Sequential([Flatten(), Doubler(), Dense(2)]).build((2, 2, 1)).save(tmp_path / "d.h5")
    with pytest.raises(ValueError, match="unknown layer 'Doubler'"):
        xpnn.load_model(tmp_path / "d.h5")
    with pytest.raises(ValueError, match="built-in"):
        register_keras_serializable(name="Dense")(Doubler)
    with pytest.raises(TypeError, match="Layer subclasses"):
        register_keras_serializable()(dict)


def test_bn_dropout_example_smoke_runs(capsys, monkeypatch):
    import runpy
    from pathlib import Path

    example = Path(__file__).parents[1] / "examples" / "bn_dropout_cnn.py"
    monkeypatch.setattr("sys.argv", [str(example), "--smoke", "--seed", "2"])
    runpy.run_path(str(example), run_name="__main__")
    out = capsys.readouterr().out
    assert "xpnn: test accuracy" in out and "epoch  1" in out
