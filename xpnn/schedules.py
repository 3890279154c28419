"""Learning-rate schedules: Keras 3's `keras.optimizers.schedules`, evaluated on the host in float64.

A schedule is called with the optimizer's step count before the update (`optimizer.iterations`: 0 on
the first step), as Keras does, and returns a Python float. Each has Keras's arguments, defaults and
formula; `get_config()`/`schedule_from_config()` round-trip them through JSON.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from xpnn.registry import lookup


def _real(name: str, value: Any, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite Python float from an int/float/NumPy scalar, or a TypeError/ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; received {name}={value!r}.")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite; received {name}={value!r}.")
    if positive and out <= 0:
        raise ValueError(f"{name} must be > 0; received {name}={value!r}.")
    if nonnegative and out < 0:
        raise ValueError(f"{name} must be >= 0; received {name}={value!r}.")
    return out


class LearningRateSchedule:
    """A learning rate as a function of the step (keras.optimizers.schedules.LearningRateSchedule)."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LearningRateSchedule:
        """The schedule `get_config` describes (Keras's `from_config`)."""
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]


class _StepDecay(LearningRateSchedule):
    """A decay of initial_learning_rate driven by p = step / decay_steps (floored when `staircase`): Keras's
    ExponentialDecay and InverseTimeDecay share these arguments and differ only in `_decay(p)`."""

    def __init__(
        self, initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False
    ) -> None:
        self.initial_learning_rate = _real("initial_learning_rate", initial_learning_rate, nonnegative=True)
        self.decay_steps = _real("decay_steps", decay_steps, positive=True)
        self.decay_rate = _real("decay_rate", decay_rate, nonnegative=True)
        self.staircase = bool(staircase)

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self._decay(p)

    def _decay(self, p: float) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
        }


class ExponentialDecay(_StepDecay):
    """initial_learning_rate · decay_rate^(step / decay_steps), the exponent floored when `staircase`.

    TF/Keras counterpart: keras.optimizers.schedules.ExponentialDecay.
    """

    def _decay(self, p: float) -> float:
        return self.initial_learning_rate * self.decay_rate**p


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] while step <= boundaries[0], values[i] while boundaries[i-1] < step <= boundaries[i], ...

    TF/Keras counterpart: keras.optimizers.schedules.PiecewiseConstantDecay.
    """

    def __init__(self, boundaries: list[int], values: list[float]) -> None:
        if len(boundaries) != len(values) - 1 or not boundaries:
            raise ValueError(
                "PiecewiseConstantDecay needs one more value than boundaries (and at least one boundary); received "
                f"boundaries={boundaries!r} of length {len(boundaries)} and values={values!r} of length {len(values)}."
            )
        self.boundaries = [_real(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        if any(a >= b for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"boundaries must increase strictly; received boundaries={boundaries!r}.")
        self.values = [_real(f"values[{i}]", v, nonnegative=True) for i, v in enumerate(values)]

    def __call__(self, step: int) -> float:
        for boundary, value in zip(self.boundaries, self.values):
            if step <= boundary:
                return value
        return self.values[-1]

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {"boundaries": list(self.boundaries), "values": list(self.values)}


class InverseTimeDecay(_StepDecay):
    """initial_learning_rate / (1 + decay_rate · step / decay_steps), the ratio floored when `staircase`.

    TF/Keras counterpart: keras.optimizers.schedules.InverseTimeDecay.
    """

    def _decay(self, p: float) -> float:
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)


class PolynomialDecay(LearningRateSchedule):
    """(initial − end) · (1 − step/decay_steps)^power + end; with `cycle` decay_steps grows to the next multiple.

    TF/Keras counterpart: keras.optimizers.schedules.PolynomialDecay.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        end_learning_rate: float = 0.0001,
        power: float = 1.0,
        cycle: bool = False,
    ) -> None:
        self.initial_learning_rate = _real("initial_learning_rate", initial_learning_rate, nonnegative=True)
        self.decay_steps = _real("decay_steps", decay_steps, positive=True)
        self.end_learning_rate = _real("end_learning_rate", end_learning_rate, nonnegative=True)
        self.power = _real("power", power)
        self.cycle = bool(cycle)

    def __call__(self, step: int) -> float:
        step_f, decay_steps = float(step), self.decay_steps
        if self.cycle:
            decay_steps *= 1.0 if step_f == 0 else math.ceil(step_f / self.decay_steps)
        else:
            step_f = min(step_f, decay_steps)
        p = step_f / decay_steps
        return (self.initial_learning_rate - self.end_learning_rate) * (1 - p) ** self.power + self.end_learning_rate

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "cycle": self.cycle,
        }


class CosineDecay(LearningRateSchedule):
    """Keras 3's cosine decay with optional linear warm-up.

    Without `warmup_target`: lr0 · ((1 − alpha) · ½(1 + cos(π · min(step, decay_steps)/decay_steps)) + alpha).
    With it: a line from lr0 to warmup_target over `warmup_steps`, then the cosine from warmup_target.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        alpha: float = 0.0,
        warmup_target: float | None = None,
        warmup_steps: int = 0,
    ) -> None:
        self.initial_learning_rate = _real("initial_learning_rate", initial_learning_rate, nonnegative=True)
        self.decay_steps = _real("decay_steps", decay_steps, positive=True)
        self.alpha = _real("alpha", alpha)
        self.warmup_target = None if warmup_target is None else _real("warmup_target", warmup_target, nonnegative=True)
        self.warmup_steps = _real("warmup_steps", warmup_steps, nonnegative=True)

    def _decay(self, step: float, decay_from: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * (step / self.decay_steps)))
        return decay_from * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step: int) -> float:
        step_f = float(step)
        if self.warmup_target is None:
            return self._decay(min(step_f, self.decay_steps), self.initial_learning_rate)
        step_f = min(step_f, self.decay_steps + self.warmup_steps)
        if step_f < self.warmup_steps:
            delta = self.warmup_target - self.initial_learning_rate
            return delta * (step_f / self.warmup_steps) + self.initial_learning_rate
        return self._decay(step_f - self.warmup_steps, self.warmup_target)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-friendly (Keras's `get_config`); `cls(**config)` rebuilds it."""
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


SCHEDULES: dict[str, type[LearningRateSchedule]] = {
    "exponentialdecay": ExponentialDecay,
    "piecewiseconstantdecay": PiecewiseConstantDecay,
    "inversetimedecay": InverseTimeDecay,
    "polynomialdecay": PolynomialDecay,
    "cosinedecay": CosineDecay,
}


def schedule_config(schedule: LearningRateSchedule) -> dict[str, Any]:
    """{"class_name": ..., "config": {...}}, JSON-friendly (as keras.optimizers.schedules.serialize)."""
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def schedule_from_config(spec: Any) -> LearningRateSchedule:
    """The schedule `schedule_config` described; unknown class names get the closest one suggested."""
    if not isinstance(spec, dict) or set(spec) - {"class_name", "config"} or "class_name" not in spec:
        raise TypeError(f"a schedule config is {{'class_name': ..., 'config': {{...}}}}; received {spec!r}.")
    cls = lookup("learning rate schedule", str(spec["class_name"]), SCHEDULES)
    config = spec.get("config") or {}
    if not isinstance(config, dict):
        raise TypeError(f"the config of {spec['class_name']} must be a table of arguments; received {config!r}.")
    try:
        return cls.from_config(config)
    except TypeError as exc:
        raise TypeError(f"{spec['class_name']}: {exc}. See help(xpnn.schedules.{cls.__name__}).") from None
