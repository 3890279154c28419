"""Optimizers that update parameters in place, with TensorFlow's update rules and order of operations.

Every optimizer takes Keras 3's shared arguments and applies them in Keras's order (BaseOptimizer.apply):
the gradients are clipped (`clipnorm` per tensor, else `global_clipnorm`, else `clipvalue`; at most one),
then `weight_decay` shrinks the weights, w −= w·wd·lr, then the optimizer's own update runs and the step
count (`iterations`) grows by one. `learning_rate` is a number, an `xpnn.schedules` schedule or a
function of the step, evaluated at `iterations` before the update (0 on the first step), as Keras does.

Updates follow TensorFlow's raw kernels where one exists (named in each class), in the same order of
operations, so float64 results agree to the last bits; where Keras 3 has no raw kernel the update is
Keras's formula recomputed in float64 (Keras itself would round its hyperparameters through float32).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xpnn.backends import get_backend, native
from xpnn.registry import lookup
from xpnn.schedules import LearningRateSchedule, schedule_config, schedule_from_config
from xpnn.types import Array

Rate = float | LearningRateSchedule | Callable[[int], float]
MAX_SLOT_VALUES = 1 << 31  # a declared optimizer moment larger than this is refused before it is copied
_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}


def _number(name: str, value: Any) -> float:
    """A finite Python float from an int/float/NumPy scalar (np.float32(0.009) included)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number; received {name}={value!r}.")
    out = float(value)
    if not math.isfinite(out):
        raise TypeError(f"{name} must be a finite number; received {name}={value!r}.")
    return out


def _check_rate(name: str, value: Any, low: float, high: float = math.inf, closed_high: bool = False) -> float:
    """`value` in (low, high) (or (low, high] when `closed_high`), else a ValueError naming the range."""
    out = _number(name, value)
    if not (low < out < high or (closed_high and out == high)):
        raise ValueError(f"{name} must be in ({low}, {high}{']' if closed_high else ')'}; received {name}={value!r}.")
    return out


def _in_unit(name: str, value: Any) -> float:
    """`value` in [0, 1], as Keras requires of momentum and decay factors."""
    out = _number(name, value)
    if not 0.0 <= out <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; received {name}={value!r}.")
    return out


def _optional_positive(name: str, value: Any) -> float | None:
    if value is None:
        return None
    out = _number(name, value)
    if out < 0:
        raise ValueError(f"{name} must be >= 0 (or None to turn it off); received {name}={value!r}.")
    return out


class Optimizer:
    """Updates a list of parameters in place from a list of gradients of the same shapes.

    TF/Keras counterpart: keras.optimizers.Optimizer.

    Subclasses name their per-parameter slots in `slot_names()`, create them in `_new_slot` and write
    the update in `_update(params, grads, lr)`. State (`get_state`) is the step count, the learning rate
    when it is a number (so a callback's change survives a checkpoint), and the slots as backend arrays.
    """

    def __init__(
        self,
        learning_rate: Rate,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> None:
        self._lr: Rate = 0.0
        self.learning_rate = learning_rate  # type: ignore[assignment]
        self.weight_decay = _optional_positive("weight_decay", weight_decay)
        self.clipnorm = _optional_positive("clipnorm", clipnorm)
        self.clipvalue = _optional_positive("clipvalue", clipvalue)
        self.global_clipnorm = _optional_positive("global_clipnorm", global_clipnorm)
        clips = {"clipnorm": clipnorm, "clipvalue": clipvalue, "global_clipnorm": global_clipnorm}
        if sum(v is not None for v in clips.values()) > 1:
            raise ValueError(
                "only one of clipnorm, clipvalue and global_clipnorm can be set (as in Keras); received "
                + ", ".join(f"{k}={v!r}" for k, v in clips.items())
                + "."
            )
        self.iterations = 0
        self.slots: dict[str, list[Array]] = {}
        self._shapes: list[tuple[int, ...]] | None = None
        self._pending: dict[str, list[Any]] | None = None

    # ---- learning rate -------------------------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """The rate the next step will use (a schedule evaluated at `iterations`). Settable with a number."""
        return self.learning_rate_at(self.iterations)

    @learning_rate.setter
    def learning_rate(self, value: Rate | dict[str, Any]) -> None:
        if isinstance(value, dict):
            value = schedule_from_config(value)
        if isinstance(value, LearningRateSchedule) or (callable(value) and not isinstance(value, numbers.Real)):
            self._lr = value
            return
        if isinstance(self._lr, LearningRateSchedule) or callable(self._lr):
            raise TypeError(
                f"this optimizer's learning rate is a schedule ({self._lr!r}); it cannot be set to the number "
                f"{value!r}. Build the optimizer with a number to change the rate during training."
            )
        rate = _number("learning_rate", value)
        if rate < 0:
            raise ValueError(f"learning_rate must be >= 0; received learning_rate={value!r}.")
        self._lr = rate

    @property
    def schedule(self) -> LearningRateSchedule | Callable[[int], float] | None:
        """The schedule or function behind the rate, or None when it is a number."""
        return None if isinstance(self._lr, float) else self._lr

    def learning_rate_at(self, step: int) -> float:
        """The learning rate at `step` (a schedule's value, checked: a NaN or negative rate names the step)."""
        if isinstance(self._lr, float):
            return self._lr
        value = self._lr(step)
        try:
            rate = float(value)
        except (TypeError, ValueError):
            raise TypeError(
                f"the learning rate schedule returned {value!r} at step {step}; it must return a number."
            ) from None
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(
                f"the learning rate schedule {self._lr!r} returned {rate} at step {step}; "
                "a rate must be finite and >= 0. Fix the schedule's arguments."
            )
        return rate

    def _rate_for(self, params: Sequence[Array]) -> float:
        rate = self.learning_rate_at(self.iterations)
        dtype = params[0].dtype if params else np.float64
        if rate > _FLOAT_MAX.get(dtype, math.inf) or (dtype not in _FLOAT_MAX and rate > np.finfo(dtype).max):
            raise ValueError(
                f"learning_rate={rate:g} is not finite in the model's {dtype} (max {np.finfo(dtype).max:g}); "
                "use a rate a model can train with (Keras's default for this optimizer is in help(...))."
            )
        return rate

    # ---- the step ------------------------------------------------------------------------------------
    def slot_names(self) -> tuple[str, ...]:
        """Names of the per-parameter arrays this optimizer keeps (with its present options)."""
        return ()

    def _new_slot(self, name: str, w: Array) -> Array:
        return get_backend().xp.zeros_like(w)

    def apply(self, params: list[Array], grads: list[Array]) -> None:
        """One step: clip `grads`, decay `params`, update them in place, then count the step."""
        if len(grads) != len(params):
            raise ValueError(f"apply got {len(grads)} gradients for {len(params)} parameters; pass one per parameter.")
        self.build(params)
        lr = self._rate_for(params)
        grads = self._clip(grads)
        if self.weight_decay:
            for w in params:
                decay = w * self.weight_decay
                decay *= lr
                w -= decay
        self._update(params, grads, lr)
        self.iterations += 1

    def _update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        raise NotImplementedError

    def _clip(self, grads: list[Array]) -> list[Array]:
        """Keras's _clip_gradients, on the device: each tensor by its norm, all by their global norm, or by value."""
        xp = get_backend().xp
        if self.clipnorm:
            out = []
            for g in grads:
                norm = xp.sqrt((g * g).sum())
                out.append(g * self.clipnorm / xp.maximum(norm, self.clipnorm))
            return out
        if self.global_clipnorm:
            norm = xp.sqrt(xp.stack([(g * g).sum() for g in grads]).sum())
            scale = self.global_clipnorm * xp.minimum(1.0 / norm, 1.0 / self.global_clipnorm) + (norm - norm)
            return [g * scale for g in grads]
        if self.clipvalue:
            return [xp.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads

    # ---- state ---------------------------------------------------------------------------------------
    def build(self, params: Sequence[Array]) -> None:
        """Create the slots for `params` (or adopt a restored state after checking it fits them)."""
        shapes = [p.shape for p in params]
        if shapes == self._shapes:
            return
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._check_slots(pending, shapes)
            backend = get_backend()
            self.slots = {
                name: [backend.xp.array(backend.asarray(a, dtype=p.dtype)) for a, p in zip(arrays, params)]
                for name, arrays in pending.items()
            }
            self._shapes = shapes
        elif self._shapes is None:
            self.slots = {name: [self._new_slot(name, w) for w in params] for name in self.slot_names()}
            self._shapes = shapes
        elif shapes != self._shapes:
            raise ValueError(
                f"this optimizer was built for parameters of shapes {self._shapes} and now got {shapes}; "
                "use a new optimizer for another model."
            )

    def _check_slots(self, slots: dict[str, list[Any]], shapes: list[tuple[int, ...]], against: str = "") -> None:
        """Every slot holds one array per parameter, of its shape (`against`: what `shapes` came from)."""
        for name, arrays in slots.items():
            if len(arrays) != len(shapes):
                raise ValueError(
                    f"{type(self).__name__} state {name!r} holds {len(arrays)} arrays but the model has "
                    f"{len(shapes)} trainable parameters; the state belongs to another model."
                )
            for i, (a, shape) in enumerate(zip(arrays, shapes)):
                if tuple(a.shape) != shape:
                    where = against.format(i=i) if against else f"parameter {i}"
                    raise ValueError(
                        f"{type(self).__name__} state {name!r}[{i}] has shape {tuple(a.shape)} but {where} "
                        f"has shape {shape}; the state belongs to another model."
                    )

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: step count, a numeric rate, and the slots (backend arrays)."""
        state: dict[str, Any] = {"iterations": self.iterations}
        if isinstance(self._lr, float):
            state["learning_rate"] = self._lr
        state.update(self._extra_state())
        slots = self._pending if self._pending is not None else self.slots
        state.update({name: list(arrays) for name, arrays in slots.items()})
        return state

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        """Read the scalars `_extra_state` wrote (keys already checked)."""

    def set_state(self, state: dict[str, Any], params: Sequence[Array] | None = None) -> None:
        """Restore what `get_state` returned, checking names, counts and shapes.

        The slots are checked against `params` when given (or the parameters the optimizer was built on),
        otherwise at the first `apply`, and are cast to the parameters' dtype there (a float64 state into
        a float32 model becomes float32).
        """
        if not isinstance(state, dict):
            raise TypeError(f"optimizer state must be a dict (from get_state); received {type(state).__name__}.")
        slots = self.slot_names()
        extras = tuple(self._extra_state())
        allowed = {"iterations", "learning_rate", *extras, *slots}
        unknown = sorted(set(state) - allowed)
        if unknown:
            raise ValueError(
                f"{type(self).__name__} state has unknown entries {unknown}; it holds {sorted(allowed)}. "
                "The state was written by another optimizer or options."
            )
        iterations = state.get("iterations", 0)
        if isinstance(iterations, (bool, np.bool_)) or not isinstance(iterations, numbers.Integral) or iterations < 0:
            raise ValueError(f"optimizer state 'iterations' must be an int >= 0; received {iterations!r}.")
        given = [name for name in slots if name in state]
        if given and len(given) != len(slots):
            raise ValueError(
                f"{type(self).__name__} state has {given} but not {sorted(set(slots) - set(given))}; it is incomplete."
            )
        pending: dict[str, list[Any]] = {}
        for name in given:
            arrays = state[name]
            if not isinstance(arrays, (list, tuple)):
                raise TypeError(f"optimizer state {name!r} must be a list of arrays; received {type(arrays).__name__}.")
            for i, a in enumerate(arrays):
                if not hasattr(a, "shape") or not hasattr(a, "dtype") or np.dtype(a.dtype).kind != "f":
                    raise TypeError(f"optimizer state {name!r}[{i}] must be a float array; received {a!r:.60}.")
                if int(np.prod(a.shape, dtype=np.float64)) > MAX_SLOT_VALUES:
                    raise ValueError(f"optimizer state {name!r}[{i}] declares shape {tuple(a.shape)}: too large.")
            pending[name] = list(arrays)
        counts = {len(a) for a in pending.values()}
        if len(counts) > 1:
            raise ValueError(f"{type(self).__name__} state slots hold different numbers of arrays: {sorted(counts)}.")
        if pending and params is not None:
            self._check_slots(pending, [tuple(int(d) for d in p.shape) for p in params])
        elif pending:
            first_name, first = next(iter(pending.items()))
            self._check_slots(pending, [tuple(a.shape) for a in first], f"{first_name!r}[{{i}}]")
        if "learning_rate" in state:
            if not isinstance(self._lr, float):
                raise ValueError("the state holds a numeric learning_rate but this optimizer uses a schedule.")
            self.learning_rate = state["learning_rate"]
        self._set_extra_state(state)
        self.iterations = int(iterations)
        if pending:
            self._pending, self._shapes, self.slots = pending, None, {}
            if params is not None:
                self.build(params)
        else:
            self._pending, self._shapes, self.slots = None, None, {}

    # ---- config --------------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-friendly; a schedule as {"class_name", "config"}."""
        if isinstance(self._lr, LearningRateSchedule):
            lr: Any = schedule_config(self._lr)
        elif callable(self._lr):
            raise ValueError(
                f"a learning_rate given as a plain function ({self._lr!r}) cannot be saved; "
                "use an xpnn.schedules schedule or a number."
            )
        else:
            lr = self._lr
        config: dict[str, Any] = {"learning_rate": lr, **self._own_config()}
        for key in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        return config

    def _own_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Optimizer:
        """The optimizer `get_config` describes (Keras's `Optimizer.from_config`)."""
        return cls(**config)

    def __repr__(self) -> str:
        try:
            config = self.get_config()
        except ValueError:
            config = {"learning_rate": self._lr}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in config.items())})"


class SGD(Optimizer):
    """SGD(learning_rate=0.01, momentum=0.0, nesterov=False): keras.optimizers.SGD.

    Without momentum, TF's ApplyGradientDescent: w −= lr·g (the backend's sgd_update kernel). With it,
    TF's ApplyKerasMomentum: a = a·momentum − g·lr; w += a, or with Nesterov w += a·momentum − g·lr.
    """

    def __init__(
        self,
        learning_rate: Rate = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.momentum = _in_unit("momentum", momentum)
        self.nesterov = bool(nesterov)

    def slot_names(self) -> tuple[str, ...]:
        return ("momentums",) if self.momentum != 0 else ()

    def _update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        if self.momentum == 0:
            update = get_backend().kernels.sgd_update
            for w, g in zip(params, grads):
                update(w, g, lr)
            return
        for w, g, a in zip(params, grads, self.slots["momentums"]):
            a *= self.momentum
            a -= g * lr
            if self.nesterov:
                step = a * self.momentum
                step -= g * lr
                w += step
            else:
                w += a

    def _own_config(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "nesterov": self.nesterov} if self.momentum or self.nesterov else {}


def _native_first(native_update: Callable[..., bool], kernel: Callable[..., None]) -> Callable[..., None]:
    """The update that runs native.c's one-pass loop where it takes the arrays, else the backend's kernel (its twin)."""

    def update(*args: Any) -> None:
        if not native_update(*args):
            kernel(*args)

    return update


class Adam(Optimizer):
    """Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, amsgrad=False): keras.optimizers.Adam.

    TF's ApplyAdam (the backend's adam_update kernel): alpha = lr·√(1−β2ᵗ)/(1−β1ᵗ); m += (g−m)(1−β1);
    v += (g²−v)(1−β2); w −= m·alpha/(√v+ε). With `amsgrad` (no raw kernel) Keras's formula in float64:
    v̂ = max(v̂, v) takes v's place in the last line.
    epsilon defaults to 1e-8 as tf.compat.v1.train.AdamOptimizer and the reference run; Keras uses 1e-7.
    """

    def __init__(
        self,
        learning_rate: Rate = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        amsgrad: bool = False,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.beta_1 = _check_rate("beta_1", beta_1, 0.0, 1.0) if beta_1 != 0 else 0.0
        self.beta_2 = _check_rate("beta_2", beta_2, 0.0, 1.0) if beta_2 != 0 else 0.0
        self.epsilon = _check_rate("epsilon", epsilon, 0.0)
        self.amsgrad = bool(amsgrad)

    @property
    def m(self) -> list[Array]:
        """First moments, one per parameter (a restored state before the first step included)."""
        return (self._pending or self.slots).get("m", [])

    @property
    def v(self) -> list[Array]:
        """Second moments, one per parameter."""
        return (self._pending or self.slots).get("v", [])

    def slot_names(self) -> tuple[str, ...]:
        return ("m", "v", "v_hat") if self.amsgrad else ("m", "v")

    def _update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        t = self.iterations + 1
        alpha = lr * math.sqrt(1.0 - self.beta_2**t) / (1.0 - self.beta_1**t)
        if not self.amsgrad:
            update = _native_first(native.adam_update, get_backend().kernels.adam_update)
            for w, g, m, v in zip(params, grads, self.m, self.v):
                update(w, g, m, v, alpha, 1.0 - self.beta_1, 1.0 - self.beta_2, self.epsilon)
            return
        xp = get_backend().xp
        for w, g, m, v, v_hat in zip(params, grads, self.m, self.v, self.slots["v_hat"]):
            m += (g - m) * (1.0 - self.beta_1)
            v += (g * g - v) * (1.0 - self.beta_2)
            xp.maximum(v_hat, v, out=v_hat)
            w -= (m * alpha) / (xp.sqrt(v_hat) + self.epsilon)

    def _own_config(self) -> dict[str, Any]:
        config = {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
        return {**config, "amsgrad": True} if self.amsgrad else config


class AdamW(Adam):
    """AdamW(learning_rate=0.001, weight_decay=0.004, ...): keras.optimizers.AdamW, Keras's decoupled decay.

    Adam with `weight_decay` on by default: w −= w·wd·lr before Adam's step (Keras's formula in float64;
    TF has no raw kernel for it). epsilon defaults to Keras's 1e-7.
    """

    def __init__(
        self,
        learning_rate: Rate = 0.001,
        weight_decay: float = 0.004,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> None:
        if weight_decay is None:
            raise ValueError("AdamW needs a weight_decay (a float >= 0; Keras's default is 0.004). Use Adam for none.")
        super().__init__(
            learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm, clipvalue, global_clipnorm
        )


class RMSprop(Optimizer):
    """RMSprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False): keras.optimizers.RMSprop.

    TF's ApplyRMSProp: ms += (g²−ms)(1−ρ); mom = mom·momentum + g·lr/√(ms+ε); w −= mom.
    centered: TF's ApplyCenteredRMSProp, mg += (g−mg)(1−ρ) and the denominator √((ms − mg²) + ε).
    Without momentum no `mom` is kept (w −= g·lr/√(...)), as Keras.
    """

    def __init__(
        self,
        learning_rate: Rate = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        centered: bool = False,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.rho = _in_unit("rho", rho)
        self.momentum = _in_unit("momentum", momentum)
        self.epsilon = _check_rate("epsilon", epsilon, 0.0)
        self.centered = bool(centered)

    def slot_names(self) -> tuple[str, ...]:
        names = ("velocities",)
        names += ("momentums",) if self.momentum > 0 else ()
        return names + (("average_gradients",) if self.centered else ())

    def _update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        xp = get_backend().xp
        one_minus_rho = 1.0 - self.rho
        for i, (w, g) in enumerate(zip(params, grads)):
            ms = self.slots["velocities"][i]
            ms += (g * g - ms) * one_minus_rho
            if self.centered:
                mg = self.slots["average_gradients"][i]
                mg += (g - mg) * one_minus_rho
                denom = (ms - mg * mg) + self.epsilon
            else:
                denom = ms + self.epsilon
            step = (g * lr) / xp.sqrt(denom)
            if self.momentum > 0:
                mom = self.slots["momentums"][i]
                mom *= self.momentum
                mom += step
                w -= mom
            else:
                w -= step

    def _own_config(self) -> dict[str, Any]:
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon, "centered": self.centered}


class Adagrad(Optimizer):
    """Adagrad(learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7): keras.optimizers.Adagrad.

    Keras 3's formula (float64): a += g²; w −= lr·g/√(a + ε). TF's ApplyAdagradV2 puts ε outside the root
    (g·lr/(√a + ε), tf.keras 2's Adagrad); the two agree only for ε = 0.
    """

    def __init__(
        self,
        learning_rate: Rate = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.initial_accumulator_value = _number("initial_accumulator_value", initial_accumulator_value)
        if self.initial_accumulator_value < 0:
            raise ValueError(
                "initial_accumulator_value must be >= 0; "
                f"received initial_accumulator_value={initial_accumulator_value!r}."
            )
        self.epsilon = _check_rate("epsilon", epsilon, 0.0)

    def slot_names(self) -> tuple[str, ...]:
        return ("accumulators",)

    def _new_slot(self, name: str, w: Array) -> Array:
        return get_backend().xp.full_like(w, self.initial_accumulator_value)

    def _update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        xp = get_backend().xp
        for w, g, a in zip(params, grads, self.slots["accumulators"]):
            a += g * g
            w -= (g * lr) / xp.sqrt(a + self.epsilon)

    def _own_config(self) -> dict[str, Any]:
        return {"initial_accumulator_value": self.initial_accumulator_value, "epsilon": self.epsilon}


class Nadam(Optimizer):
    """Nadam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7): keras.optimizers.Nadam.

    No raw kernel: Keras 3's formula in float64, with its momentum schedule uₜ = β1(1 − ½·0.96ᵗ) and the
    running product Πuₜ: m̂ = uₜ₊₁m/(1 − Πuₜ₊₁) + (1 − uₜ)g/(1 − Πuₜ); w −= m̂·lr/(√(v/(1 − β2ᵗ)) + ε).
    """

    def __init__(
        self,
        learning_rate: Rate = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        weight_decay: float | None = None,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm)
        self.beta_1 = _in_unit("beta_1", beta_1)
        self.beta_2 = _in_unit("beta_2", beta_2)
        self.epsilon = _check_rate("epsilon", epsilon, 0.0)
        self.u_product = 1.0

    def slot_names(self) -> tuple[str, ...]:
        return ("m", "v")

    def _extra_state(self) -> dict[str, Any]:
        return {"u_product": self.u_product}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        self.u_product = _number("u_product", state.get("u_product", 1.0))

    def _update(self, params: list[Array], grads: list[Array], lr: float) -> None:
        xp = get_backend().xp
        t = self.iterations + 1
        u_t = self.beta_1 * (1.0 - 0.5 * 0.96**t)
        u_t_1 = self.beta_1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        self.u_product *= u_t
        u_product_t_1 = self.u_product * u_t_1
        beta_2_power = self.beta_2**t
        for w, g, m, v in zip(params, grads, self.slots["m"], self.slots["v"]):
            m += (g - m) * (1.0 - self.beta_1)
            v += (g * g - v) * (1.0 - self.beta_2)
            m_hat = (m * u_t_1) / (1.0 - u_product_t_1) + (g * (1.0 - u_t)) / (1.0 - self.u_product)
            v_hat = v / (1.0 - beta_2_power)
            w -= (m_hat * lr) / (xp.sqrt(v_hat) + self.epsilon)

    def _own_config(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
    "nadam": Nadam,
}


def get_optimizer(spec: str | Optimizer) -> Optimizer:
    """An Optimizer from a name ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam"; default settings) or itself."""
    if isinstance(spec, Optimizer):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"optimizer must be a name or an xpnn.optimizers.Optimizer; got {type(spec).__name__}.")
    return lookup("optimizer", spec, OPTIMIZERS)()


def optimizer_from_config(spec: Any) -> Optimizer:
    """The optimizer {"class_name": "Adam", "config": {...}} describes; only xpnn's optimizer classes are accepted."""
    if not isinstance(spec, dict) or "class_name" not in spec or set(spec) - {"class_name", "config"}:
        raise TypeError(f"an optimizer config is {{'class_name': ..., 'config': {{...}}}}; received {spec!r:.200}.")
    classes = {cls.__name__.lower(): cls for cls in OPTIMIZERS.values()}
    cls = lookup("optimizer class", str(spec["class_name"]), classes)
    config = spec.get("config") or {}
    if not isinstance(config, dict):
        raise TypeError(f"the config of {spec['class_name']} must be a table of arguments; received {config!r:.200}.")
    try:
        return cls.from_config(config)
    except TypeError as exc:
        raise TypeError(f"{spec['class_name']}: {exc}. See help(xpnn.optimizers.{cls.__name__}).") from None
