"""Activation functions, each a forward/backward pair written once against `xp`, and Keras's names for them.

`forward(x)` returns `(out, cache)` and `backward(dout, cache)` returns dx. Functions whose gradient
needs only the output cache the output (ReLU, sigmoid, tanh, softmax); the others cache the input.
The table `ACTIVATIONS` is what `activation="..."` on Dense/Conv2D and `Activation(name)` accept,
with Keras 3's defaults (keras.activations.leaky_relu's slope 0.2, elu's alpha 1.0, gelu's exact form).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.registry import lookup
from xpnn.types import Array

# tf.nn.gelu's constants, each through math_ops.cast(python float, dtype), which makes a float32 tensor first:
# in float64 TF multiplies by float32(1/√2) and float32(0.044715); so do we (a ~2e-8 relative shift from the
# textbook GELU, far below float32's resolution). √(2/π) it multiplies as a Python float, exactly.
GELU_ERF_SCALE = float(np.float32(0.7071067811865476))
GELU_TANH_SCALE = 0.7978845608028654
GELU_TANH_COEFF = float(np.float32(0.044715))
INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


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
    """tanh(x) (tf.math.tanh)."""
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


def tf_float_attr(value: float) -> float:
    """`value` as TensorFlow holds a `float` op attribute: rounded to float32 (LeakyRelu's alpha is one)."""
    return float(np.float32(value))


def leaky_relu_forward(x: Array, negative_slope: float) -> Array:
    """x where x > 0, else x·slope, as tf.nn.leaky_relu (whose float attr rounds the slope to float32)."""
    return get_backend().xp.where(x > 0, x, x * tf_float_attr(negative_slope))


def leaky_relu_backward(dout: Array, x: Array, negative_slope: float) -> Array:
    """dout where x > 0, else dout·slope (TF's LeakyReluGrad)."""
    return get_backend().xp.where(x > 0, dout, dout * tf_float_attr(negative_slope))


def _elu_base(x: Array) -> Array:
    """exp(x) − 1 where x < 0, else x: TF's Elu kernel (exp − 1, not expm1)."""
    xp = get_backend().xp
    return xp.where(x < 0, xp.exp(xp.minimum(x, 0.0)) - 1.0, x)


def elu_forward(x: Array, alpha: float) -> Array:
    """x where x > 0, else alpha·(exp(x) − 1), as keras.activations.elu on TensorFlow."""
    base = _elu_base(x)
    return base if alpha == 1.0 else get_backend().xp.where(x > 0, base, base * alpha)


def elu_backward(dout: Array, x: Array, alpha: float) -> Array:
    """TF's EluGrad ((base + 1)·g where base < 0) of the alpha-scaled gradient on x ≤ 0."""
    xp = get_backend().xp
    base = _elu_base(x)
    g = dout if alpha == 1.0 else xp.where(x > 0, dout, dout * alpha)
    return xp.where(base < 0, (base + 1.0) * g, g)


def gelu_forward(x: Array, approximate: bool) -> Array:
    """tf.nn.gelu: 0.5·x·erfc(−x/√2), or with `approximate` 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    if approximate:
        xp = get_backend().xp
        return 0.5 * x * (1.0 + xp.tanh(GELU_TANH_SCALE * (x + GELU_TANH_COEFF * x**3)))
    return 0.5 * x * get_backend().kernels.erfc(-x * GELU_ERF_SCALE)


def gelu_backward(dout: Array, x: Array, approximate: bool) -> Array:
    """The exact derivative of `gelu_forward` (Φ(x) + x·φ(x) for the erf form, with TF's constants)."""
    xp = get_backend().xp
    if approximate:
        t = xp.tanh(GELU_TANH_SCALE * (x + GELU_TANH_COEFF * x**3))
        slope = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_COEFF * x * x)
        return dout * slope
    u = x * GELU_ERF_SCALE
    cdf = 0.5 * get_backend().kernels.erfc(-u)
    return dout * (cdf + u * xp.exp(-(u * u)) * INV_SQRT_PI)


def silu_forward(x: Array) -> Array:
    """x·σ(x), as tf.nn.silu (Keras's silu, alias swish)."""
    return x * sigmoid_forward(x)


def silu_backward(dout: Array, x: Array) -> Array:
    """dout·σ·(1 + x·(1 − σ)), tf.nn.silu's gradient."""
    s = sigmoid_forward(x)
    return dout * (s * (1.0 + x * (1.0 - s)))


def softplus_forward(x: Array) -> Array:
    """log(1 + exp(x)) without overflow, as tf.math.softplus."""
    return get_backend().xp.logaddexp(0.0, x)


def softplus_backward(dout: Array, x: Array) -> Array:
    """dout·σ(x) (TF's SoftplusGrad)."""
    return dout * sigmoid_forward(x)


@dataclass(frozen=True)
class ActivationFn:
    """A named activation: `forward(x) -> (out, cache)`, `backward(dout, cache) -> dx`."""

    name: str
    fwd: Callable[[Array], Array] | None  # None: linear
    bwd: Callable[[Array, Array], Array] | None
    caches_output: bool = True
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_linear(self) -> bool:
        """Whether this is the identity ("linear", or no activation)."""
        return self.fwd is None

    def forward(self, x: Array) -> tuple[Array, Array | None]:
        """(output, what the backward needs: the output or the input, whichever the derivative is written in)."""
        if self.fwd is None:
            return x, None
        out = self.fwd(x, **self.kwargs)
        return out, (out if self.caches_output else x)

    def backward(self, dout: Array, cache: Array | None) -> Array:
        """dL/d input from dL/d output and what `forward` kept."""
        return dout if self.bwd is None else self.bwd(dout, cache, **self.kwargs)


def _by_input(name: str, fwd: Callable, bwd: Callable, **kwargs: Any) -> ActivationFn:
    return ActivationFn(name, fwd, bwd, caches_output=False, kwargs=kwargs)


ACTIVATIONS: dict[str, ActivationFn] = {
    "linear": ActivationFn("linear", None, None),
    "relu": ActivationFn("relu", relu_forward, relu_backward),
    "sigmoid": ActivationFn("sigmoid", sigmoid_forward, sigmoid_backward),
    "tanh": ActivationFn("tanh", tanh_forward, tanh_backward),
    "softmax": ActivationFn("softmax", softmax_forward, softmax_backward),
    "leaky_relu": _by_input("leaky_relu", leaky_relu_forward, leaky_relu_backward, negative_slope=0.2),
    "elu": _by_input("elu", elu_forward, elu_backward, alpha=1.0),
    "gelu": _by_input("gelu", gelu_forward, gelu_backward, approximate=False),
    "silu": _by_input("silu", silu_forward, silu_backward),
    "softplus": _by_input("softplus", softplus_forward, softplus_backward),
}
ACTIVATIONS["swish"] = ACTIVATIONS["silu"]  # Keras's alias; serialised as "silu"


def get_activation(spec: str | ActivationFn | None) -> ActivationFn:
    """An activation from Keras's name (None means linear); unknown names suggest the closest."""
    if spec is None:
        return ACTIVATIONS["linear"]
    if isinstance(spec, ActivationFn):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation must be a name such as 'relu' or None; got {spec!r}.")
    return lookup("activation", spec, ACTIVATIONS)


def with_params(name: str, **kwargs: Any) -> ActivationFn:
    """The activation `name` with other parameters (LeakyReLU's slope, ELU's alpha, GELU's form)."""
    base = ACTIVATIONS[name]
    return ActivationFn(base.name, base.fwd, base.bwd, base.caches_output, {**base.kwargs, **kwargs})


@dataclass(frozen=True)
class ActivatedCache:
    """The cache of a layer with a built-in activation: its own cache and the activation's."""

    inner: Any
    act: Array | None


def activate(fn: ActivationFn, out: Array, inner: Any) -> tuple[Array, Any]:
    """Apply a layer's `activation=`; a linear one leaves the output and the cache as they are."""
    if fn.is_linear:
        return out, inner
    out, act = fn.forward(out)
    return out, ActivatedCache(inner, act)


def deactivate(fn: ActivationFn, dout: Array, cache: Any) -> tuple[Array, Any]:
    """Undo `activate` in the backward: the gradient before the activation and the layer's own cache."""
    if fn.is_linear:
        return dout, cache
    return fn.backward(dout, cache.act), cache.inner
