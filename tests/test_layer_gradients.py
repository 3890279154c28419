"""Central-difference gradient checks in float64 for the layers of issue 14, in every mode they have.

Dilations 1-3, groups 1-4, depth multipliers 1-2, odd and even sizes, both paddings; BatchNormalization
in training (gradient through the batch statistics) and inference; Dropout with its mask held fixed.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad

from xpnn import regularizers
from xpnn.layers import (
    ELU,
    GELU,
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    LeakyReLU,
    Reshape,
    SeparableConv2D,
    ZeroPadding2D,
)
from xpnn.layers.activation_fns import ACTIVATIONS

NAMES = sorted(set(ACTIVATIONS) - {"swish"})


def check_layer(layer, x_shape, seed=0, training=None, rtol=1e-6, atol=1e-8, margin=0.0):
    """backward's dx and parameter grads against central differences of sum(out * r), in one mode."""
    rng = np.random.default_rng(seed)
    layer.build(x_shape[1:], rng, np.dtype("float64"))
    for key in layer.params:  # non-trivial weights so every gradient path is exercised
        layer.params[key] = rng.standard_normal(layer.params[key].shape)
    for key in layer.non_trainable:
        layer.non_trainable[key] = rng.uniform(0.5, 1.5, layer.non_trainable[key].shape)
    x = rng.standard_normal(x_shape)
    x += np.sign(x) * margin  # away from kinks (ReLU-like at 0)
    kwargs = {} if training is None else {"training": training}
    state = layer.get_state()

    def run():
        if state is not None:
            layer.set_state(state)  # Dropout draws the same mask every time
        return layer.forward(x, **kwargs)

    out, cache = run()
    r = rng.standard_normal(out.shape)
    dx, grads = layer.backward(r, cache)

    def cost():
        return float(np.sum(run()[0] * r))

    np.testing.assert_allclose(dx, numeric_grad(cost, x), rtol=rtol, atol=atol, err_msg="dx")
    assert set(grads) == set(layer.params)
    for key, value in layer.params.items():
        np.testing.assert_allclose(grads[key], numeric_grad(cost, value), rtol=rtol, atol=atol, err_msg=key)
    return out


CONV_CASES = [  # (h, w, k, stride, dilation, padding, groups, cin, filters)
    (7, 7, 3, 1, 2, "same", 1, 2, 3),
    (8, 6, 2, 1, 3, "same", 2, 4, 2),
    (9, 8, 3, 1, 3, "valid", 3, 3, 6),
    (6, 7, 3, 1, 1, "same", 4, 4, 4),
    (7, 6, 3, 2, 1, "same", 2, 4, 6),
    (8, 8, 2, 3, 1, "valid", 4, 8, 4),
    (5, 6, (3, 2), 1, (2, 1), "same", 1, 2, 2),
]


@pytest.mark.parametrize("h,w,k,s,d,padding,groups,cin,filters", CONV_CASES)
def test_conv2d_dilation_groups_gradients(h, w, k, s, d, padding, groups, cin, filters):
    layer = Conv2D(filters, k, strides=s, padding=padding, dilation_rate=d, groups=groups)
    check_layer(layer, (2, h, w, cin), seed=h * w + groups)


@pytest.mark.parametrize("name", NAMES)
def test_conv2d_activation_gradients(name):
    check_layer(Conv2D(3, 2, padding="same", activation=name), (2, 4, 5, 2), seed=3, margin=0.05)


@pytest.mark.parametrize("name", NAMES)
def test_dense_activation_gradients(name):
    check_layer(Dense(4, activation=name), (3, 5), seed=4, margin=0.05)


@pytest.mark.parametrize("h,w,k,s,d,padding,mult", [
    (7, 7, 3, 1, 1, "same", 1),
    (8, 7, 3, 1, 2, "same", 2),
    (9, 8, 2, 1, 3, "valid", 1),
    (8, 8, 3, 2, 1, "same", 2),
    (7, 6, 2, 3, 1, "valid", 1),
])  # fmt: skip
def test_depthwise_gradients(h, w, k, s, d, padding, mult):
    layer = DepthwiseConv2D(k, strides=s, padding=padding, depth_multiplier=mult, dilation_rate=d)
    check_layer(layer, (2, h, w, 3), seed=h + w + mult)


@pytest.mark.parametrize("s,d,mult,padding", [(1, 1, 1, "valid"), (2, 1, 2, "same"), (1, 2, 2, "same")])
def test_separable_gradients(s, d, mult, padding):
    layer = SeparableConv2D(4, 3, strides=s, padding=padding, depth_multiplier=mult, dilation_rate=d)
    check_layer(layer, (2, 7, 6, 3), seed=s + d + mult)


def test_activations_with_conv_and_no_bias():
    check_layer(DepthwiseConv2D(2, activation="tanh", use_bias=False), (2, 4, 4, 2))
    check_layer(SeparableConv2D(2, 2, activation="gelu", use_bias=False), (2, 4, 4, 2))


@pytest.mark.parametrize(
    "layer",
    [LeakyReLU(), LeakyReLU(0.05), ELU(), ELU(0.5), GELU(), GELU(approximate=True)] + [Activation(n) for n in NAMES],
    ids=lambda layer: repr(layer),
)
def test_activation_layer_gradients(layer):
    check_layer(layer, (3, 2, 3, 4), margin=0.05)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "shape,kwargs",
    [
        ((6, 5), {}),
        ((3, 4, 5, 3), {}),
        ((2, 3, 4, 3), {"center": False}),
        ((2, 3, 4, 3), {"scale": False}),
        ((2, 3, 4, 3), {"center": False, "scale": False}),
        ((2, 3, 4, 5), {"axis": 1}),
        ((3, 5, 4, 3), {"epsilon": 0.5, "momentum": 0.5}),
    ],
)
def test_batchnorm_gradients(shape, kwargs, training):
    check_layer(BatchNormalization(**kwargs), shape, training=training)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("rate", [0.0, 0.3, 0.7])
def test_dropout_gradients(rate, training):
    out = check_layer(Dropout(rate, seed=5), (4, 3, 5, 2), training=training)
    assert (out == 0).any() == (training and rate > 0)


@pytest.mark.parametrize("layer", [GlobalAveragePooling2D(), GlobalMaxPooling2D(), GlobalMaxPooling2D(keepdims=True)])
@pytest.mark.parametrize("shape", [(2, 5, 5, 3), (3, 4, 6, 2)])
def test_global_pool_gradients(layer, shape):
    check_layer(layer, shape)


@pytest.mark.parametrize("padding", [1, (2, 0), ((0, 1), (3, 2))])
def test_zero_padding_gradients(padding):
    check_layer(ZeroPadding2D(padding), (2, 3, 4, 2))


@pytest.mark.parametrize("target", [(6, 4), (-1,), (2, -1, 3)])
def test_reshape_gradients(target):
    check_layer(Reshape(target), (2, 2, 3, 4))


@pytest.mark.parametrize("reg", [regularizers.L1(0.3), regularizers.L2(0.2), regularizers.L1L2(0.1, 0.4)], ids=repr)
def test_regularizer_gradients(reg):
    w = np.random.default_rng(2).standard_normal((3, 4))
    w += np.sign(w) * 0.05  # |w| is not differentiable at 0
    np.testing.assert_allclose(reg.gradient(w), numeric_grad(lambda: float(reg(w)), w), rtol=1e-6, atol=1e-8)
