"""Inverted dropout, as keras.layers.Dropout on TensorFlow: kept units scaled by 1/(1 − rate) in training.

The mask is drawn on the host from a NumPy generator (seeded by `seed`, or else from the model's build
stream), so a seed gives the same masks on every backend; TF's own random stream is TF's, so the TF
fixtures give the mask. The generator's state is the layer's `get_state()`, so a checkpoint resumes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.layers.base import Layer
from xpnn.types import Array

BIT_GENERATOR = "PCG64"


@dataclass(frozen=True)
class DropoutCache:
    keep: Array | None  # boolean mask (None in inference or with rate 0: identity)
    scale: float


def dropout_forward(x: Array, keep: Array, scale: float) -> Array:
    """where(keep, x·scale, 0), tf.nn.dropout's arithmetic (the scale 1/(1 − rate) taken in float64)."""
    xp = get_backend().xp
    return xp.where(keep, x * scale, xp.zeros((), dtype=x.dtype))


def dropout_backward(dout: Array, cache: DropoutCache) -> Array:
    """where(keep, dout, 0)·scale, the gradient of `dropout_forward`."""
    if cache.keep is None:
        return dout
    xp = get_backend().xp
    return xp.where(cache.keep, dout, xp.zeros((), dtype=dout.dtype)) * cache.scale


class Dropout(Layer):
    """Dropout(rate, seed=None): zero each input with probability `rate` in training, scale the rest by 1/(1 − rate).

    TF/Keras counterpart: keras.layers.Dropout.
    """

    takes_training = True

    def __init__(self, rate: float, *, seed: int | None = None) -> None:  # Keras: (rate, noise_shape, seed)
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout expects a rate in [0, 1) (the fraction dropped); received rate={rate!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"Dropout expects seed to be a non-negative int or None; received seed={seed!r}.")
        self.rate = float(rate)
        self.seed = None if seed is None else int(seed)
        self.rng: np.random.Generator | None = None if seed is None else np.random.default_rng(self.seed)

    def build(self, input_shape: tuple[int, ...], rng: np.random.Generator, dtype: np.dtype) -> tuple[int, ...]:
        """Start the mask stream afresh: from `seed`, or else as a child of the model's build stream
        (`rng.spawn`, which draws nothing from `rng`: the other layers' initial weights stay as without Dropout)."""
        if self.seed is not None:
            self.rng = np.random.default_rng(self.seed)
        else:
            try:
                self.rng = rng.spawn(1)[0]
            except (TypeError, ValueError):  # a generator without a SeedSequence (restored from a state)
                self.rng = np.random.default_rng(int(rng.integers(2**63)))
        return super().build(input_shape, rng, dtype)

    def forward(self, x: Array, training: bool = False) -> tuple[Array, DropoutCache]:
        scale = 1.0 / (1.0 - self.rate)
        if not training or self.rate == 0.0:
            return x, DropoutCache(None, scale)
        if self.rng is None:
            raise ValueError("Dropout has no random stream yet: build the model (or give Dropout a seed) first.")
        keep = get_backend().asarray(self.rng.random(x.shape) >= self.rate)
        return dropout_forward(x, keep, scale), DropoutCache(keep, scale)

    def backward(self, dout: Array, cache: DropoutCache, need_dx: bool = True) -> tuple[Array | None, dict]:
        return (dropout_backward(dout, cache) if need_dx else None), {}

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate, "seed": self.seed}

    def get_state(self) -> dict[str, Any] | None:
        """The mask generator's bit_generator state (JSON-friendly), or None before build."""
        return None if self.rng is None else {"rng": self.rng.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        """Resume the mask stream from `get_state()`; anything but a PCG64 state is refused."""
        inner = state.get("rng") if isinstance(state, dict) else None
        if not isinstance(inner, dict) or inner.get("bit_generator") != BIT_GENERATOR:
            raise ValueError(f"Dropout state must hold a {BIT_GENERATOR} generator state under 'rng'; got {state!r}.")
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = inner
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"Dropout state is not a valid {BIT_GENERATOR} state ({exc}).") from None
        self.rng = rng
