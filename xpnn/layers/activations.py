"""Activation layers (keras.layers.ReLU, LeakyReLU, ELU, Softmax, Activation, ...) over `activation_fns`."""

from __future__ import annotations

from typing import Any

from xpnn.layers.activation_fns import ActivationFn, get_activation, with_params
from xpnn.layers.base import Layer
from xpnn.types import Array


class _Activation(Layer):
    """A layer that applies one activation function element-wise (softmax: over the last axis)."""

    fn: ActivationFn = get_activation("relu")

    def forward(self, x: Array) -> tuple[Array, Array | None]:
        return self.fn.forward(x)

    def backward(self, dout: Array, cache: Array | None, need_dx: bool = True) -> tuple[Array | None, dict]:
        return (self.fn.backward(dout, cache) if need_dx else None), {}


class ReLU(_Activation):
    """ReLU(): max(x, 0).

    TF/Keras counterpart: keras.layers.ReLU.
    """


class Sigmoid(_Activation):
    """Sigmoid(): 1 / (1 + exp(-x)).

    TF/Keras counterpart: keras.layers.Activation("sigmoid").
    """

    fn = get_activation("sigmoid")


class Tanh(_Activation):
    """Tanh(): tanh(x).

    TF/Keras counterpart: keras.layers.Activation("tanh").
    """

    fn = get_activation("tanh")


class Softmax(_Activation):
    """Softmax(): softmax over the last axis (pair logits with softmax_cross_entropy instead for training).

    TF/Keras counterpart: keras.layers.Softmax.
    """

    fn = get_activation("softmax")


class LeakyReLU(_Activation):
    """LeakyReLU(negative_slope=0.3): x where x > 0, else slope·x, as keras.layers.LeakyReLU."""

    def __init__(self, negative_slope: float = 0.3) -> None:
        super().__init__()
        if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)) or not negative_slope >= 0:
            raise ValueError(
                f"LeakyReLU expects a non-negative float negative_slope; received negative_slope={negative_slope!r}."
            )
        self.negative_slope = float(negative_slope)
        self.fn = with_params("leaky_relu", negative_slope=self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}


class ELU(_Activation):
    """ELU(alpha=1.0): x where x > 0, else alpha·(exp(x) − 1), as keras.layers.ELU."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise TypeError(f"ELU expects a float alpha; received alpha={alpha!r}.")
        self.alpha = float(alpha)
        self.fn = with_params("elu", alpha=self.alpha)

    def get_config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


class GELU(_Activation):
    """GELU(approximate=False): x·Φ(x) with the exact erf, or tf.nn.gelu's tanh form (keras.activations.gelu)."""

    def __init__(self, approximate: bool = False) -> None:
        super().__init__()
        if not isinstance(approximate, bool):
            raise TypeError(f"GELU expects approximate=True or False; received approximate={approximate!r}.")
        self.approximate = approximate
        self.fn = with_params("gelu", approximate=approximate)

    def get_config(self) -> dict[str, Any]:
        return {"approximate": self.approximate}


class Activation(_Activation):
    """Activation(activation): an activation by Keras's name ("relu", "gelu", "silu", ...), keras.layers.Activation."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        self.fn = get_activation(activation)
        self.activation = self.fn.name

    def get_config(self) -> dict[str, Any]:
        return {"activation": self.activation}
