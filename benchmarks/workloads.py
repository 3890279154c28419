"""The benchmark's workloads: which network, which batch, and what one timed call does.

Two networks share one layout: the reference (conv 4x4x8 → pool 8 → conv 2x2x16 → pool 4 →
dense 6) and a wider variant (conv 3x3x32 → pool 8 → conv 3x3x64 → pool 4 → dense 6), all
SAME, on 64x64x3 SIGNS-shaped float32 images. Every framework builds the same math from these specs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = 6
IMAGE = (64, 64, 3)
LEARNING_RATE = 0.009


@dataclass(frozen=True)
class Net:
    """conv(k1, f1) → ReLU → max-pool 8/8 → conv(k2, f2) → ReLU → max-pool 4/4 → flatten → dense 6, all SAME."""

    name: str
    k1: int
    f1: int
    k2: int
    f2: int


REFERENCE = Net("reference", 4, 8, 2, 16)
WIDE = Net("wide", 3, 32, 3, 64)


@dataclass(frozen=True)
class Workload:
    """`kind` is "train" (one forward/backward/Adam step), "predict" (inference) or "signs" (a full run)."""

    key: str
    label: str
    net: Net
    batch: int
    kind: str


WORKLOADS = [
    Workload("a", "(a) reference train step, batch 64", REFERENCE, 64, "train"),
    Workload("b256", "(b) reference train step, batch 256", REFERENCE, 256, "train"),
    Workload("b1024", "(b) reference train step, batch 1024", REFERENCE, 1024, "train"),
    Workload("c", "(c) wide train step (32/64 filters, 3x3), batch 64", WIDE, 64, "train"),
    Workload("d", "(d) reference predict, batch 1024", REFERENCE, 1024, "predict"),
    Workload("e", "(e) reference 25-epoch SIGNS run, batch 64", REFERENCE, 64, "signs"),
]


def tf_same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME (before, after) padding of one axis; the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def synthetic_batch(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """SIGNS-shaped float32 images in [0, 1) and integer labels 0..5."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *IMAGE), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=batch)
    return x, y


def signs_train() -> tuple[np.ndarray, np.ndarray] | None:
    """SIGNS' 1080 training images as float32 in [0, 1] and int labels, or None when it is absent."""
    from xpnn.datasets import find_signs, load_signs

    if find_signs() is None:
        return None
    (x, y), _ = load_signs()
    return (x / np.float32(255.0)).astype(np.float32), y
