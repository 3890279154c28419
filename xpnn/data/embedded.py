"""The embedded stand-in for SIGNS: synthetic 'hands' showing 0-5 fingers, drawn in code.

Not real data: it lets the reference run, examples and tests work on machines without
SIGNS. Same layout as SIGNS (uint8 (n, 64, 64, 3), labels 0..5) and deterministic per seed.
"""

from __future__ import annotations

import numpy as np

CLASSES = 6
SIZE = 64


def _draw_hand(fingers: int, rng: np.random.Generator) -> np.ndarray:
    """One 64x64x3 float image in [0, 1]: a palm and `fingers` raised fingers on a plain background."""
    img = np.empty((SIZE, SIZE, 3))
    img[:] = rng.uniform(0.0, 0.45, size=3)
    skin = np.array([0.85, 0.65, 0.5]) + rng.uniform(-0.1, 0.1, size=3)
    left = int(rng.integers(6, 14))
    palm_top = int(rng.integers(36, 42))
    img[palm_top : palm_top + 18, left : left + 46] = skin
    for k in range(fingers):
        x0 = left + 1 + 9 * k + int(rng.integers(-1, 2))
        length = int(rng.integers(16, 26))
        img[palm_top - length : palm_top, x0 : x0 + 5] = skin
    img += rng.normal(0.0, 0.04, size=img.shape)
    return np.clip(img, 0.0, 1.0)


def load_embedded(
    n_train: int = 600, n_test: int = 120, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(x_train, y_train), (x_test, y_test) of the synthetic hand-sign set, balanced over 6 classes.

    Shaped like Keras's `keras.datasets.*.load_data()` results."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n, dtype=np.int64) % CLASSES
        rng.shuffle(y)
        x = np.stack([_draw_hand(int(k), rng) for k in y])
        return np.round(x * 255.0).astype(np.uint8), y

    return split(n_train), split(n_test)
