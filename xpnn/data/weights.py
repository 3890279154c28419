"""Per-sample weights from Keras's `sample_weight=` and `class_weight=` (checked, as host float64 arrays)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _labels_as_classes(y: Any) -> np.ndarray:
    """Integer class per sample from integer labels (n,) or label rows (n, classes) (their argmax)."""
    arr = np.asarray(y)
    if arr.ndim == 2:
        return arr.argmax(axis=1)
    return arr.reshape(-1).astype(np.int64)


def sample_weights(
    y: Any, n: int, classes: int, sample_weight: Any = None, class_weight: Mapping[Any, float] | None = None
) -> np.ndarray | None:
    """The weight of each of `n` samples: `sample_weight` times `class_weight[label]` (Keras multiplies them).

    None when neither is given. Weights must be finite and >= 0; class_weight keys must be classes of the data.
    """
    if sample_weight is None and class_weight is None:
        return None
    out = np.ones(n, dtype=np.float64)
    if sample_weight is not None:
        sw = np.asarray(sample_weight)
        if sw.dtype.kind not in "fiub" or sw.shape not in ((n,), (n, 1)):
            raise ValueError(
                f"sample_weight must be {n} numbers, one per sample (shape ({n},)); got shape {sw.shape}, "
                f"dtype {sw.dtype}."
            )
        sw = sw.reshape(-1).astype(np.float64)
        if not np.isfinite(sw).all() or (sw < 0).any():
            raise ValueError("sample_weight must hold finite numbers >= 0; it holds a negative, NaN or Inf value.")
        out *= sw
    if class_weight is not None:
        if not isinstance(class_weight, Mapping):
            raise TypeError(f"class_weight must be a dict {{class index: weight}}; got {type(class_weight).__name__}.")
        bad = [k for k in class_weight if isinstance(k, bool) or not isinstance(k, (int, np.integer))
               or not 0 <= int(k) < classes]  # fmt: skip
        if bad:
            raise ValueError(
                f"class_weight keys must be class indices 0..{classes - 1}; got {bad!r}. "
                "Map each class index (not a class name) to its weight."
            )
        table = np.ones(classes, dtype=np.float64)
        for k, w in class_weight.items():
            w = float(w)
            if not np.isfinite(w) or w < 0:
                raise ValueError(f"class_weight[{k}] must be a finite number >= 0; got {w}.")
            table[int(k)] = w
        out *= table[_labels_as_classes(y)]
    return out
