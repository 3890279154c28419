"""Keras models in and out, without TensorFlow (`keras.models.load_model` / `model.save("m.keras")`).

    model = xpnn.keras.load_model("m.keras")     # a Keras 3 archive or a legacy Keras .h5 -> xpnn.Sequential
    xpnn.keras.save_keras(model, "m.keras")       # the same as model.to_keras("m.keras")

The formats themselves live in `xpnn.keras_format` (the io floor); this module gives them xpnn's
`Sequential`, so a loaded model trains, saves and evaluates like any other.
"""

from __future__ import annotations

import os
from pathlib import Path

from xpnn import keras_format
from xpnn.api import Sequential
from xpnn.keras_format import save_keras

__all__ = ["load_model", "save_keras"]


def load_model(path: str | os.PathLike | Path, cls: type | None = None, dtype: str | None = None) -> Sequential:
    """A Keras Sequential model file (`.keras` archive or legacy `.h5`) as an `xpnn.Sequential` (or `cls`).

    `dtype` ("float32"/"float64") overrides the file's; unknown layers or options give one error listing them all.
    """
    return keras_format.load_model(path, cls or Sequential, dtype)
