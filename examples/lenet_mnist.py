"""LeNet-5 on MNIST-format IDX files (MNIST, Fashion-MNIST), gzipped or not.

python examples/lenet_mnist.py --data path/to/mnist   # train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
                                                      # t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]
python examples/lenet_mnist.py --smoke                # writes small IDX files (synthetic digits), 1 epoch

Reads with `xpnn.datasets.load_idx`: uint8 (n, 28, 28, 1) images (NHWC, one channel) and int64 labels.
"""

from __future__ import annotations

import argparse
import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np

import xpnn
from xpnn import Adam, AvgPool2D, Conv2D, Dense, Flatten, ReLU, Sequential

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format: 0, 0, type 0x08 (ubyte), number of dims; each dim as a big-endian int32; the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_fake_mnist(folder: Path, n_train: int = 64, n_test: int = 32) -> Path:
    """Small gzipped IDX files: a bar at a class-dependent row on noise (not MNIST, but the same format)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            x[i, 2 + 2 * k : 4 + 2 * k, 4:24] = 255
        images, labels = FILES[split]
        write_idx(folder / f"{images}.gz", x)
        write_idx(folder / f"{labels}.gz", y)
    return folder


def find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{folder} has no {name} or {name}.gz")


def lenet5(classes: int = 10) -> Sequential:
    """LeCun et al. 1998 with ReLU: conv 5x5x6 SAME, avg-pool 2, conv 5x5x16, avg-pool 2, dense 120, 84, 10."""
    return Sequential(
        [
            Conv2D(6, 5, padding="same"), ReLU(), AvgPool2D(2, strides=2),
            Conv2D(16, 5, padding="valid"), ReLU(), AvgPool2D(2, strides=2),
            Flatten(), Dense(120), ReLU(), Dense(84), ReLU(), Dense(classes),
        ]
    ).build((28, 28, 1), seed=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder holding the four IDX files")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="generated IDX files (64 + 32 images), 1 epoch")
    args = parser.parse_args(argv)
    if args.data is None and not args.smoke:
        parser.error("give --data FOLDER with the MNIST IDX files, or --smoke")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or write_fake_mnist(Path(tmp))
        data = {}
        for split, (images, labels) in FILES.items():
            data[split] = xpnn.datasets.load_idx(find(folder, images), find(folder, labels))
    (x, y), (xt, yt) = data["train"], data["test"]
    print(f"{len(x)} train / {len(xt)} test images of {x.shape[1:]} from {folder}")

    model = lenet5()
    model.summary()
    history = model.fit(x, y, epochs=1 if args.smoke else args.epochs, batch_size=32, optimizer=Adam(0.001),
                        seed=1, validation_data=(xt, yt))
    print(f"final loss {history.history['loss'][-1]:.4f}, test accuracy {model.evaluate(xt, yt)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
