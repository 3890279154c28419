"""Weight initializers drawn on the host from a seeded NumPy generator, as tf.keras.initializers.

Fans use the receptive field as Keras does: a (fh, fw, cin, cout) kernel has
fan_in = fh·fw·cin and fan_out = fh·fw·cout; a dense (in, out) kernel has fan_in = in, fan_out = out.
Drawing on the host makes a seed give the same weights on every backend.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel shape, as keras.src.initializers.random_initializers.compute_fans."""
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Uniform in ±sqrt(6 / (fan_in + fan_out)) (Xavier; keras GlorotUniform)."""
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def _truncated_normal(shape: tuple[int, ...], stddev: float, rng: np.random.Generator) -> np.ndarray:
    """Normal(0, stddev) redrawn outside ±2 stddev, as keras' truncated normal."""
    out = rng.standard_normal(size=shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(size=int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * stddev


def glorot_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Truncated normal with stddev sqrt(2 / (fan_in + fan_out)) / .87962566 (keras GlorotNormal)."""
    fan_in, fan_out = fans(shape)
    return _truncated_normal(shape, math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978, rng)


def he_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Truncated normal with stddev sqrt(2 / fan_in) / .87962566 (keras HeNormal)."""
    fan_in, _ = fans(shape)
    return _truncated_normal(shape, math.sqrt(2.0 / fan_in) / 0.87962566103423978, rng)


def zeros(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """All zeros (biases)."""
    return np.zeros(shape)


@dataclass(frozen=True)
class Initializer:
    """A named initializer: `init(shape, rng)` returns a float64 host array."""

    name: str
    fn: Callable[[tuple[int, ...], np.random.Generator], np.ndarray]

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return self.fn(tuple(int(s) for s in shape), rng)


INITIALIZERS = {f.__name__: Initializer(f.__name__, f) for f in (glorot_uniform, glorot_normal, he_normal, zeros)}


def get_initializer(spec: str | Initializer) -> Initializer:
    """An Initializer from its name ("glorot_uniform", "glorot_normal", "he_normal", "zeros")."""
    if isinstance(spec, Initializer):
        return spec
    key = str(spec).lower()
    if key in INITIALIZERS:
        return INITIALIZERS[key]
    close = difflib.get_close_matches(key, INITIALIZERS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown initializer {spec!r}; choose one of {', '.join(INITIALIZERS)}.{hint}")
