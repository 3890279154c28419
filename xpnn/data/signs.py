"""The SIGNS hand-sign dataset (6 classes, 64x64 RGB) from its HDF5 files, never copied into the project.

Looked up in: an explicit folder, `$XPNN_DATA/signs`, then `../shared/datasets/signs`
beside the working directory and beside the checkout that holds this package.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

SPLITS = {
    "train": ("train_signs.h5", "train_set_x", "train_set_y"),
    "test": ("test_signs.h5", "test_set_x", "test_set_y"),
}


def signs_candidates(path: str | os.PathLike | None = None) -> list[Path]:
    """The folders that may hold SIGNS' .h5 files, in the order they are tried."""
    if path is not None:
        return [Path(path)]
    places = []
    if os.environ.get("XPNN_DATA"):
        places.append(Path(os.environ["XPNN_DATA"]) / "signs")
    places.append(Path.cwd().parent / "shared" / "datasets" / "signs")
    places.append(Path(__file__).resolve().parents[3] / "shared" / "datasets" / "signs")
    unique: list[Path] = []
    for p in places:
        if p not in unique:
            unique.append(p)
    return unique


def find_signs(path: str | os.PathLike | None = None) -> Path | None:
    """The first candidate folder holding both SIGNS files, or None."""
    for folder in signs_candidates(path):
        if all((folder / SPLITS[s][0]).is_file() for s in SPLITS):
            return folder
    return None


def signs_not_found(path: str | os.PathLike | None = None) -> str:
    """The one-line message for SIGNS missing: where it looked and the two ways on."""
    looked = ", ".join(str(p) for p in signs_candidates(path))
    return (
        f"SIGNS not found (train_signs.h5 and test_signs.h5) in {looked}. Set XPNN_DATA to the folder that holds "
        "signs/ (or pass --data), or use the small built-in stand-in (--embedded, xpnn.datasets.load_embedded())."
    )


def locate_signs(path: str | os.PathLike | None = None) -> Path | None:
    """SIGNS' folder where the user said it is; None only when they named no place and it is nowhere.

    An explicit `path` (`--data`) or a set `$XPNN_DATA` that holds no SIGNS raises `FileNotFoundError`
    instead of falling back to the default places or to the embedded set: a typo in a path must not
    silently train on other data. With neither set, the default places are tried (`find_signs`).
    """
    named = str(path) if path is not None else os.environ.get("XPNN_DATA") or None
    if named is None:
        return find_signs()
    folder = find_signs(path) if path is not None else find_signs(Path(named) / "signs")
    if folder is None:
        where = f"--data {path}" if path is not None else f"XPNN_DATA={named} (looked in {Path(named) / 'signs'})"
        raise FileNotFoundError(
            f"no SIGNS data at {where}: train_signs.h5 and test_signs.h5 are missing. Fix the path, "
            "unset XPNN_DATA, or use --embedded for the built-in synthetic set."
        )
    return folder


def _read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    filename, x_key, y_key = SPLITS[split]
    file = folder / filename
    try:
        with h5py.File(file, "r") as f:
            x, y = np.asarray(f[x_key]), np.asarray(f[y_key]).reshape(-1)
    except (OSError, KeyError) as exc:
        raise ValueError(
            f"{file} is not a readable SIGNS file with '{x_key}' and '{y_key}' ({exc}); "
            "restore it from the dataset's release (see shared/datasets/README.md)."
        ) from exc
    if x.shape[1:] != (64, 64, 3) or len(x) != len(y):
        raise ValueError(f"{file}: expected images (n, 64, 64, 3) and n labels; got {x.shape} and {y.shape}.")
    return x, y.astype(np.int64)


def load_signs(
    path: str | os.PathLike | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(x_train, y_train), (x_test, y_test): uint8 (n, 64, 64, 3) images and int64 labels 0..5.

    Shaped like Keras's `keras.datasets.*.load_data()` results."""
    folder = find_signs(path)
    if folder is None:
        raise FileNotFoundError(signs_not_found(path))
    return _read_split(folder, "train"), _read_split(folder, "test")
