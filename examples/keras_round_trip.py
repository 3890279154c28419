"""xpnn -> Keras `.keras` file -> xpnn, with the same predictions; and an ONNX export checked by onnxruntime.

python examples/keras_round_trip.py            # trains a small model first
python examples/keras_round_trip.py --smoke    # 1 epoch on 64 images (CI)

Uses `model.to_keras` (keras.Model.save's `.keras` archive), `xpnn.keras.load_model` (keras.models.load_model,
without TensorFlow) and `model.to_onnx`. Where TensorFlow is installed, Keras itself loads the file too;
where onnxruntime is installed, it runs the ONNX export.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

import xpnn.keras
from xpnn import Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: the project's measure of agreement."""
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 64 images")
    args = parser.parse_args(argv)

    n_train, epochs = (64, 1) if args.smoke else (600, 5)
    (x, y), (xt, yt) = xpnn.datasets.load_embedded(n_train=n_train, n_test=32)
    model = Sequential(
        [Conv2D(8, 4, padding="same"), ReLU(), MaxPool2D(8, strides=8, padding="same"), Flatten(), Dense(6)]
    ).build((64, 64, 3), seed=1)
    model.fit(x, y, epochs=epochs, batch_size=32, optimizer=Adam(0.009), seed=1, verbose=0)
    ours = model.predict(xt)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        model.to_keras(path)
        back = xpnn.keras.load_model(path)
        print(f"xpnn -> {path.name} -> xpnn: predictions differ by {rel(back.predict(xt), ours):.1e} (relative)")
        if importlib.util.find_spec("tensorflow") is not None:
            import keras

            theirs = keras.models.load_model(path).predict(xt.astype(np.float32) / 255.0, verbose=0)
            print(f"Keras loads it: predictions differ by {rel(theirs, ours):.1e} (relative)")
        else:
            print("TensorFlow not installed: Keras's own load skipped (pip install -e '.[tf]')")

        if importlib.util.find_spec("onnxruntime") is not None:
            import onnxruntime

            onnx_path = Path(tmp) / "model.onnx"
            model.to_onnx(onnx_path)
            session = onnxruntime.InferenceSession(str(onnx_path))
            name = session.get_inputs()[0].name
            out = session.run(None, {name: xt.astype(np.float32) / 255.0})[0]
            print(f"ONNX (onnxruntime): predictions differ by {rel(out, ours):.1e} (relative)")
        else:
            print("ONNX export skipped (needs onnxruntime: pip install -e '.[onnx]')")


if __name__ == "__main__":
    main()
