"""Weight penalties added to the cost, as keras.regularizers (Keras 3's formulas: no ½ on L2).

L1: l1·Σ|w|; L2: l2·Σw²; L1L2: both. Keras 3 multiplies L2's factor and both of L1L2's through
`ops.cast(factor, x.dtype)`, which rounds them to float32 even for float64 weights (L1 multiplies by the
Python float); we round the same ones, so float64 penalties agree with Keras to the last bits.
Each is `reg(w) -> scalar array` and `reg.gradient(w) -> array` (TF's gradients: l1·sign(w), 0 at 0;
2·l2·w). Layers keep them in `layer.regularizers`, keyed like
their params ("w", "b", ...); the model adds `reg(w)` to the cost and `reg.gradient(w)` to the gradient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.registry import lookup
from xpnn.types import Array


def _penalty(value: Any, name: str) -> float:
    """A non-negative finite float, as keras.src.regularizers.validate_float_arg demands."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite float; received {name}={value!r}.")
    return float(value)


class Regularizer:
    """Base class: `__call__(w)` is the penalty, `gradient(w)` its derivative, `get_config()` the arguments.

    TF/Keras counterpart: keras.regularizers.Regularizer.
    """

    def __call__(self, w: Array) -> Array:
        raise NotImplementedError

    def gradient(self, w: Array) -> Array:
        """The penalty's gradient with respect to `w` (added to the weight's gradient)."""
        raise NotImplementedError

    def get_config(self) -> dict[str, float]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.get_config().items())))


def keras_cast(value: float) -> float:
    """`ops.cast(python_float, dtype)` in Keras 3 on TensorFlow: the float goes through float32 first."""
    return float(np.float32(value))


class L1L2(Regularizer):
    """L1L2(l1=0.0, l2=0.0): l1·Σ|w| + l2·Σw² (each term only when its factor is non-zero, as Keras)."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _penalty(l1, "l1")
        self.l2 = _penalty(l2, "l2")

    def _factors(self) -> tuple[float, float]:
        """The factors as Keras applies them: (l1, l2) each rounded through float32."""
        return keras_cast(self.l1), keras_cast(self.l2)

    def __call__(self, w: Array) -> Array:
        xp = get_backend().xp
        l1, l2 = self._factors()
        total = xp.zeros((), dtype=w.dtype)
        if l1:
            total = total + l1 * xp.abs(w).sum()
        if l2:
            total = total + l2 * (w * w).sum()
        return total

    def gradient(self, w: Array) -> Array:
        """The penalty's gradient with respect to `w` (added to the weight's gradient)."""
        xp = get_backend().xp
        l1, l2 = self._factors()
        grad = xp.zeros_like(w)
        if l1:
            grad += l1 * xp.sign(w)
        if l2:
            grad += l2 * (2.0 * w)
        return grad

    def get_config(self) -> dict[str, float]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """L1(l1=0.01): l1·Σ|w|.

    TF/Keras counterpart: keras.regularizers.L1.
    """

    def __init__(self, l1: float = 0.01) -> None:
        super().__init__(l1=l1)

    def _factors(self) -> tuple[float, float]:
        return self.l1, 0.0  # keras L1 multiplies by the Python float itself

    def get_config(self) -> dict[str, float]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {"l1": self.l1}


class L2(L1L2):
    """L2(l2=0.01): l2·Σw² (Keras 3; Keras 2's docs wrote the same, TF's tf.nn.l2_loss halves it)."""

    def __init__(self, l2: float = 0.01) -> None:
        super().__init__(l2=l2)

    def get_config(self) -> dict[str, float]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {"l2": self.l2}


REGULARIZERS: dict[str, type[L1L2]] = {"l1": L1, "l2": L2, "l1l2": L1L2, "l1_l2": L1L2}
CLASSES = {"L1": L1, "L2": L2, "L1L2": L1L2}


def get(spec: str | dict | Regularizer | None) -> Regularizer | None:
    """A regularizer from a name ("l1", "l2", "l1_l2": Keras's defaults), a {class_name, config} dict, or itself."""
    if spec is None or isinstance(spec, Regularizer):
        return spec
    if isinstance(spec, str):
        return lookup("regularizer", spec, REGULARIZERS)()
    if isinstance(spec, dict) and "class_name" in spec:
        cls = lookup("regularizer class", spec["class_name"], {k.lower(): v for k, v in CLASSES.items()})
        config = spec.get("config") or {}
        if not isinstance(config, dict):
            raise TypeError(f"regularizer config must be a dict of arguments; got {config!r}.")
        try:
            return cls(**config)
        except TypeError as exc:
            raise TypeError(f"regularizer {spec['class_name']}: {exc}") from None
    raise TypeError(f"a regularizer must be a name ('l1', 'l2', 'l1_l2'), a dict or a Regularizer; got {spec!r}.")


def serialize(reg: Regularizer | None) -> dict[str, Any] | None:
    """{class_name, config} (JSON-friendly), or None."""
    return None if reg is None else {"class_name": type(reg).__name__, "config": reg.get_config()}
