"""Optimizers that update parameters in place, with TensorFlow's update rules and order of operations.

Adam is TensorFlow's epsilon-hat form (tf.raw_ops.ApplyAdam, keras.optimizers.Adam):
alpha = lr·√(1−β2ᵗ)/(1−β1ᵗ); m += (g−m)(1−β1); v += (g²−v)(1−β2); w −= m·alpha/(√v+ε).
"""

from __future__ import annotations

import math
from typing import Any

from xpnn.backends import get_backend
from xpnn.registry import lookup
from xpnn.types import Array


def _check_rate(name: str, value: float, low: float, high: float = math.inf, closed_high: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number; received {name}={value!r}.")
    ok = low < value < high or (closed_high and value == high)
    if not ok:
        raise ValueError(f"{name} must be in ({low}, {high}{']' if closed_high else ')'}; received {name}={value!r}.")
    return float(value)


class Optimizer:
    """Updates a list of parameters in place from a list of gradients of the same shapes.

    Keras's `keras.optimizers.Optimizer`, with the state (`get_state`) kept outside the weights so that
    checkpoints can resume it exactly.
    """

    def apply(self, params: list[Array], grads: list[Array]) -> None:
        """One update of every parameter from its gradient (Keras's `optimizer.apply(grads, variables)`)."""
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: step count and moments (backend arrays)."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what `get_state` returned."""

    def get_config(self) -> dict[str, float]:
        """The constructor arguments (Keras's `get_config`), as saved in model files and run configs."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class SGD(Optimizer):
    """Plain gradient descent, w −= lr·g (SparkNeuralNets' "simple" optimizer).

    `keras.optimizers.SGD(learning_rate)` without momentum; TF's `ApplyGradientDescent` kernel.
    """

    def __init__(self, learning_rate: float = 0.01) -> None:
        self.learning_rate = _check_rate("learning_rate", learning_rate, 0.0)

    def apply(self, params: list[Array], grads: list[Array]) -> None:
        update = get_backend().kernels.sgd_update
        for w, g in zip(params, grads):
            update(w, g, self.learning_rate)

    def get_config(self) -> dict[str, float]:
        return {"learning_rate": self.learning_rate}


class Adam(Optimizer):
    """Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8) in TensorFlow's form.

    epsilon defaults to 1e-8 as tf.compat.v1.train.AdamOptimizer and the reference run; Keras uses 1e-7.
    """

    def __init__(
        self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-8
    ) -> None:
        self.learning_rate = _check_rate("learning_rate", learning_rate, 0.0)
        self.beta_1 = _check_rate("beta_1", beta_1, 0.0, 1.0) if beta_1 != 0 else 0.0
        self.beta_2 = _check_rate("beta_2", beta_2, 0.0, 1.0) if beta_2 != 0 else 0.0
        self.epsilon = _check_rate("epsilon", epsilon, 0.0)
        self.iterations = 0
        self.m: list[Array] = []
        self.v: list[Array] = []

    def apply(self, params: list[Array], grads: list[Array]) -> None:
        xp = get_backend().xp
        if len(self.m) != len(params):
            self.m = [xp.zeros_like(w) for w in params]
            self.v = [xp.zeros_like(w) for w in params]
        self.iterations += 1
        t = self.iterations
        alpha = self.learning_rate * math.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        update = get_backend().kernels.adam_update
        for w, g, m, v in zip(params, grads, self.m, self.v):
            update(w, g, m, v, alpha, 1.0 - self.beta_1, 1.0 - self.beta_2, self.epsilon)

    def get_state(self) -> dict[str, Any]:
        return {"iterations": self.iterations, "m": list(self.m), "v": list(self.v)}

    def set_state(self, state: dict[str, Any]) -> None:
        backend = get_backend()
        self.iterations = int(state["iterations"])
        self.m = [backend.xp.array(backend.asarray(a)) for a in state["m"]]
        self.v = [backend.xp.array(backend.asarray(a)) for a in state["v"]]

    def get_config(self) -> dict[str, float]:
        return {
            "learning_rate": self.learning_rate,
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
        }


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def get_optimizer(spec: str | Optimizer) -> Optimizer:
    """An Optimizer from a name ("sgd", "adam", with default settings) or itself (`keras.optimizers.get`)."""
    if isinstance(spec, Optimizer):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"optimizer must be a name or an xpnn.optimizers.Optimizer; got {type(spec).__name__}.")
    return lookup("optimizer", spec, OPTIMIZERS)()
