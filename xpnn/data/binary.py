"""MNIST-style IDX files and the CIFAR-10 binary release, read with their sizes checked before the data.

IDX (yann.lecun.com/exdb/mnist): two zero bytes, a type byte (0x08 = uint8), a dimension count, then each
dimension as a big-endian int32, then the values; MNIST and Fashion-MNIST images are (n, 28, 28) and labels
(n,), optionally gzipped. CIFAR-10 binary (cs.toronto.edu/~kriz/cifar.html): records of one label byte and
3072 pixel bytes (the red, green and blue 32x32 planes), 10000 to a file. Neither format holds code; nothing
is unpickled (the python release of CIFAR-10 is a pickle and is not read).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

IDX_UINT8 = 0x08
MAX_BYTES = 2 << 30  # per file, uncompressed
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def _read_exact(f, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(f"{path} is truncated: {what} needs {n} bytes, the file has {len(data)}.")
    return data


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """A uint8 IDX array of `ndim` dimensions; a ValueError naming the file when it is anything else."""
    file = Path(path)
    try:
        with _open(file) as f:
            head = _read_exact(f, 4, file, "the IDX header")
            if head[:2] != b"\0\0" or head[2] != IDX_UINT8 or head[3] != ndim:
                raise ValueError(
                    f"{file} is not a uint8 IDX file of {ndim} dimensions (magic bytes {head.hex()}, expected "
                    f"0000{IDX_UINT8:02x}{ndim:02x}); pass the MNIST images-idx3 and labels-idx1 files."
                )
            dims = tuple(int(d) for d in np.frombuffer(_read_exact(f, 4 * ndim, file, "the dimensions"), ">u4"))
            size = int(np.prod(dims, dtype=np.int64))
            if size > MAX_BYTES or min(dims) < 1:
                raise ValueError(f"{file} declares dimensions {dims} ({size} bytes); not an IDX file xpnn reads.")
            expected = 4 + 4 * ndim + size
            if not isinstance(f, gzip.GzipFile) and file.stat().st_size != expected:
                raise ValueError(
                    f"{file} is {file.stat().st_size} bytes but its header declares {dims} ({expected} bytes "
                    "with the header): truncated or damaged."
                )
            data = _read_exact(f, size, file, f"an array of shape {dims}")
            if f.read(1):
                raise ValueError(f"{file} holds bytes after its {dims} array; it is not one IDX array.")
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ValueError(f"cannot read {file} ({type(exc).__name__}: {exc}); it may be truncated.") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def load_idx(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (n, rows, cols, 1), y int64) from an IDX image file and its label file (gzipped or not).

    TF/Keras counterpart: what keras.datasets.mnist.load_data reads, from local files.
    """
    x = read_idx(images_path, 3)
    y = read_idx(labels_path, 1).astype(np.int64)
    if len(x) != len(y):
        raise ValueError(f"{images_path} holds {len(x)} images but {labels_path} holds {len(y)} labels.")
    if y.max() >= num_classes:
        raise ValueError(f"{labels_path} has label {int(y.max())}, outside 0..{num_classes - 1} (num_classes).")
    return x[..., None], y


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (n, 32, 32, 3), y int64) from one CIFAR-10 binary batch file."""
    file = Path(path)
    size = file.stat().st_size
    if size == 0 or size % CIFAR_RECORD or size > MAX_BYTES:
        raise ValueError(
            f"{file} is {size} bytes, not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records "
            "(truncated, or not the binary version: the python version's pickles are not read)."
        )
    records = np.fromfile(file, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    y = records[:, 0].astype(np.int64)
    if y.max() >= len(CIFAR_CLASSES):
        raise ValueError(f"{file} has label {int(y.max())}, outside CIFAR-10's 0..9; is it CIFAR-100?")
    x = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def find_cifar10(folder: str | os.PathLike) -> Path | None:
    """The folder holding the binary batches: `folder` itself or its cifar-10-batches-bin, else None."""
    for place in (Path(folder), Path(folder) / "cifar-10-batches-bin"):
        if (place / CIFAR_TEST).is_file() and all((place / n).is_file() for n in CIFAR_TRAIN):
            return place
    return None


def load_cifar10(
    folder: str | os.PathLike,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(x_train, y_train), (x_test, y_test) of CIFAR-10's binary version: uint8 (n, 32, 32, 3), int64 labels.

    TF/Keras counterpart: keras.datasets.cifar10.load_data, from local files.
    """
    place = find_cifar10(folder)
    if place is None:
        raise FileNotFoundError(
            f"{folder} does not hold CIFAR-10's binary version ({', '.join(CIFAR_TRAIN)}, {CIFAR_TEST}, "
            "as in cifar-10-binary.tar.gz)."
        )
    parts = [read_cifar_batch(place / n) for n in CIFAR_TRAIN]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return train, read_cifar_batch(place / CIFAR_TEST)
