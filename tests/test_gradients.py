"""Central-difference gradient checks in float64: every layer, every loss, and the whole reference net."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import numeric_grad

import xpnn
from xpnn import losses
from xpnn.layers import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid, Softmax, Tanh

GEOMETRIES = [  # (h, w, k, stride, padding): odd and even sizes, strides 1-3, both paddings
    (5, 5, 3, 1, "same"),
    (6, 6, 4, 1, "same"),
    (7, 6, 3, 2, "same"),
    (8, 7, 2, 3, "same"),
    (7, 7, 3, 2, "valid"),
    (8, 8, 2, 1, "valid"),
    (9, 8, 3, 3, "valid"),
]


def check_layer(layer, x_shape, seed=0, rtol=1e-6, atol=1e-8, positive_margin=False):
    """Compare backward's dx and parameter grads with central differences of sum(out * r)."""
    rng = np.random.default_rng(seed)
    layer.build(x_shape[1:], rng, np.dtype("float64"))
    for key in layer.params:  # non-zero biases so their gradient paths are exercised
        layer.params[key] = rng.standard_normal(layer.params[key].shape)
    x = rng.standard_normal(x_shape)
    if positive_margin:  # keep inputs away from kinks (ReLU at 0)
        x += np.sign(x) * 0.1
    out, cache = layer.forward(x)
    r = rng.standard_normal(out.shape)
    dx, grads = layer.backward(r, cache)

    def cost():
        return float(np.sum(layer.forward(x)[0] * r))

    np.testing.assert_allclose(dx, numeric_grad(cost, x), rtol=rtol, atol=atol, err_msg="dx")
    for key, value in layer.params.items():
        np.testing.assert_allclose(grads[key], numeric_grad(cost, value), rtol=rtol, atol=atol, err_msg=key)
    assert set(grads) == set(layer.params)


@pytest.mark.parametrize("h,w,k,s,padding", GEOMETRIES)
def test_conv2d_gradients(h, w, k, s, padding):
    check_layer(Conv2D(3, k, strides=s, padding=padding), (2, h, w, 2), seed=h + w + k + s)


def test_conv2d_without_bias_rectangular():
    check_layer(Conv2D(2, (3, 2), strides=(2, 1), padding="same", use_bias=False), (2, 7, 6, 2))


@pytest.mark.parametrize("h,w,k,s,padding", GEOMETRIES)
@pytest.mark.parametrize("pool", [MaxPool2D, AvgPool2D])
def test_pool_gradients(h, w, k, s, padding, pool):
    # Distinct values per window keep the max differentiable (no ties within eps).
    check_layer(pool(k, strides=s, padding=padding), (2, h, w, 3), seed=h * w + k)


@pytest.mark.parametrize("layer", [Dense(5), Flatten(), ReLU(), Sigmoid(), Tanh(), Softmax()], ids=lambda x: x.name)
def test_dense_activation_gradients(layer):
    shape = (3, 4) if not isinstance(layer, Flatten) else (3, 2, 3, 2)
    check_layer(layer, shape, positive_margin=isinstance(layer, ReLU))


@pytest.mark.parametrize(
    "loss,labels",
    [
        ("softmax_cross_entropy", "onehot"),
        ("softmax_cross_entropy", "soft"),
        ("sigmoid_cross_entropy", "soft"),
        ("mse", "normal"),
    ],
)
def test_loss_gradients_are_true_gradients(loss, labels):
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 6)) * 3
    if labels == "onehot":
        y = np.eye(6)[rng.integers(0, 6, 4)]
    elif labels == "soft":
        y = rng.uniform(size=(4, 6))
        y /= y.sum(axis=1, keepdims=True)
    else:
        y = rng.standard_normal((4, 6))
    fn = xpnn.get_loss(loss)
    _, grad = fn(logits, y)
    np.testing.assert_allclose(grad, numeric_grad(lambda: float(fn(logits, y)[0]), logits), rtol=1e-6, atol=1e-9)


def test_softmax_xent_backward_is_tensorflows_for_unnormalised_labels():
    """For label rows not summing to 1, TF returns (softmax - labels)/n, not the true gradient."""
    rng = np.random.default_rng(6)
    logits, y = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    _, grad = losses.softmax_cross_entropy(logits, y)
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(grad, (soft - y) / 3, rtol=1e-13)
    true = numeric_grad(lambda: float(losses.softmax_cross_entropy(logits, y)[0]), logits)
    np.testing.assert_allclose(true, (soft * y.sum(axis=1, keepdims=True) - y) / 3, rtol=1e-6, atol=1e-9)


def test_reference_network_end_to_end_gradients():
    """The whole reference net on a small input: every weight's gradient against central differences."""
    from xpnn.reference import reference_layers

    model = xpnn.Sequential(reference_layers(), dtype="float64").build((16, 16, 3), seed=3)
    rng = np.random.default_rng(7)
    model.set_weights([w + 0.05 * rng.standard_normal(w.shape) for w in model.get_weights()])
    x = rng.standard_normal((2, 16, 16, 3))
    y = np.eye(6)[[1, 4]]
    loss = xpnn.get_loss("softmax_cross_entropy")
    result = model.run_pass(x, y, loss)
    for param, grad in zip(model.parameters(), result.grads):
        numeric = numeric_grad(lambda: float(model.run_pass(x, y, loss).cost), param)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
