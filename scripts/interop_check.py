"""Keras -> xpnn -> Keras and xpnn -> ONNX on a Keras-trained SIGNS model; prints the relative differences.

Needs the `tf` and `onnx` extras (and onnxruntime); uses SIGNS when found, else the embedded stand-in.

    python scripts/interop_check.py [--epochs 10] [--seed 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's xpnn

import numpy as np  # noqa: E402


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / np.abs(b).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()

    import keras
    import onnxruntime as ort

    from xpnn import datasets
    from xpnn.keras import load_model, save_keras
    from xpnn.onnx_export import export_onnx

    if datasets.find_signs() is not None:
        (x, y), (xt, _) = datasets.load_signs()
        source = "SIGNS"
    else:
        (x, y), (xt, _) = datasets.load_embedded()
        source = "embedded stand-in"
    tmp = Path(tempfile.mkdtemp())
    for dtype in ("float32", "float64"):
        keras.config.set_floatx(dtype)
        keras.config.set_dtype_policy(dtype)
        keras.utils.set_random_seed(args.seed)
        xs, xts = (x / 255.0).astype(dtype), (xt / 255.0).astype(dtype)
        theirs = keras.Sequential(
            [
                keras.Input((64, 64, 3)),
                keras.layers.Conv2D(8, 4, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(8, strides=8, padding="same"),
                keras.layers.Conv2D(16, 2, padding="same", activation="relu"),
                keras.layers.MaxPooling2D(4, strides=4, padding="same"),
                keras.layers.Flatten(),
                keras.layers.Dense(6, activation="softmax"),
            ]
        )
        theirs.compile(keras.optimizers.Adam(0.009), "sparse_categorical_crossentropy", metrics=["accuracy"])
        t0 = time.time()
        hist = theirs.fit(xs, y, batch_size=64, epochs=args.epochs, verbose=0)
        theirs.save(tmp / f"keras_{dtype}.keras")
        k_pred = np.asarray(theirs.predict(xts, verbose=0))
        ours = load_model(tmp / f"keras_{dtype}.keras")
        x_pred = ours.predict(xts)
        save_keras(ours, tmp / f"xpnn_{dtype}.keras")
        back = keras.models.load_model(tmp / f"xpnn_{dtype}.keras")
        b_pred = np.asarray(back.predict(xts, verbose=0))
        agree = float((x_pred.argmax(1) == k_pred.argmax(1)).mean())
        print(
            f"{dtype}: Keras trained {args.epochs} epochs on {source} ({time.time() - t0:.1f} s, "
            f"accuracy {hist.history['accuracy'][-1]:.3f}); {len(xts)} test images"
        )
        print(
            f"  Keras .keras -> xpnn.keras.load_model: max rel diff of predict {rel(x_pred, k_pred):.2e}, "
            f"argmax agree {agree:.3f}"
        )
        print(f"  xpnn save_keras -> keras.models.load_model: max rel diff {rel(b_pred, x_pred):.2e}")
        onnx_path = export_onnx(ours, tmp / f"xpnn_{dtype}.onnx", dtype="float32")
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        o_pred = session.run(None, {"input": xts.astype("float32")})[0]
        print(f"  xpnn export_onnx (float32) -> onnxruntime {ort.__version__}: max rel diff {rel(o_pred, x_pred):.2e}")


if __name__ == "__main__":
    main()
