"""Element-wise activations and softmax, each cached by its output (all their gradients need only that)."""

from __future__ import annotations

from xpnn.backends import get_backend
from xpnn.layers.base import Layer
from xpnn.types import Array


def relu_forward(x: Array) -> Array:
    """max(x, 0), as tf.nn.relu."""
    return get_backend().xp.maximum(x, 0.0)


def relu_backward(dout: Array, out: Array) -> Array:
    """dout where the output is positive (TF's ReluGrad: 0 at x = 0)."""
    return get_backend().kernels.relu_grad(dout, out)


def sigmoid_forward(x: Array) -> Array:
    """1 / (1 + exp(-x)), computed as exp(-log(1 + exp(-x))) so no exp overflows."""
    xp = get_backend().xp
    return xp.exp(-xp.logaddexp(0.0, -x))


def sigmoid_backward(dout: Array, out: Array) -> Array:
    """dout · σ · (1 − σ)."""
    return dout * out * (1.0 - out)


def tanh_forward(x: Array) -> Array:
    """tanh(x) elementwise (`tf.math.tanh`)."""
    return get_backend().xp.tanh(x)


def tanh_backward(dout: Array, out: Array) -> Array:
    """dout · (1 − tanh²)."""
    return dout * (1.0 - out * out)


def softmax_forward(x: Array) -> Array:
    """Row-wise softmax over the last axis, shifted by the row max, as tf.nn.softmax."""
    xp = get_backend().xp
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(dout: Array, out: Array) -> Array:
    """s · (dout − Σ dout·s), the softmax Jacobian-vector product."""
    return out * (dout - (dout * out).sum(axis=-1, keepdims=True))


class _Activation(Layer):
    _forward = staticmethod(relu_forward)
    _backward = staticmethod(relu_backward)

    def forward(self, x: Array) -> tuple[Array, Array]:
        out = self._forward(x)
        return out, out

    def backward(self, dout: Array, cache: Array, need_dx: bool = True) -> tuple[Array | None, dict]:
        return (self._backward(dout, cache) if need_dx else None), {}


class ReLU(_Activation):
    """ReLU(): max(x, 0) (`keras.layers.ReLU`, `tf.nn.relu`)."""


class Sigmoid(_Activation):
    """Sigmoid(): 1 / (1 + exp(-x)) (`keras.layers.Activation("sigmoid")`, `tf.math.sigmoid`)."""

    _forward = staticmethod(sigmoid_forward)
    _backward = staticmethod(sigmoid_backward)


class Tanh(_Activation):
    """Tanh(): tanh(x) (`keras.layers.Activation("tanh")`, `tf.math.tanh`)."""

    _forward = staticmethod(tanh_forward)
    _backward = staticmethod(tanh_backward)


class Softmax(_Activation):
    """Softmax(): softmax over the last axis (`keras.layers.Softmax`, `tf.nn.softmax`).

    For training, end the model with logits and use `softmax_cross_entropy` instead.
    """

    _forward = staticmethod(softmax_forward)
    _backward = staticmethod(softmax_backward)
