"""Train a small model, save it, load it back, predict: the loaded model predicts bit for bit the same.

python examples/save_load_predict.py            # 5 epochs on the embedded hand-sign set
python examples/save_load_predict.py --smoke    # 1 epoch on 64 images (CI)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import xpnn
from xpnn import Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 64 images")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="where to write model.h5 (default: a temp folder)")
    args = parser.parse_args(argv)
    n_train, n_test, epochs = (64, 32, 1) if args.smoke else (600, 120, args.epochs)

    (x, y), (xt, yt) = xpnn.datasets.load_embedded(n_train=n_train, n_test=n_test)
    model = Sequential(
        [Conv2D(8, 4, padding="same"), ReLU(), MaxPool2D(8, strides=8, padding="same"), Flatten(), Dense(6)]
    ).build((64, 64, 3), seed=1)
    model.fit(x, y, epochs=epochs, batch_size=32, optimizer=Adam(0.009), seed=1, verbose=0)

    with tempfile.TemporaryDirectory() as tmp:
        path = (args.out or Path(tmp)) / "model.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)                      # architecture, weights, dtype, optimizer state (atomic HDF5)
        loaded = xpnn.load_model(path)        # a Sequential, compiled with the saved optimizer
        before, after = model.predict(xt), loaded.predict(xt)
        print(f"saved and loaded {path.name}: {path.stat().st_size} bytes")

    same = bool((before == after).all())
    print(f"predictions identical after load: {same}")
    print(f"predicted classes of the first 8 test images: {after.argmax(axis=1)[:8].tolist()} (true {yt[:8].tolist()})")
    print(f"test accuracy {loaded.evaluate(xt, yt)['accuracy']:.3f}")
    if not same:
        sys.exit("error: the loaded model predicts differently from the saved one")


if __name__ == "__main__":
    main()
