"""What a data path holds, for the CLI's `--data PATH`: SIGNS, CIFAR-10, an MNIST IDX folder or an image folder.

`detect_data(path)` looks (file names and counts, no pixels) and returns (kind, one-line description);
`load_data(path, ...)` loads train and test arrays and returns a `spec` that `load_data(**spec)` repeats,
so a run's config.json can name its data. Image folders come in three layouts, tried in this order:
split subfolders (`train*/` with `test*/` or `val*/`, each one of the next two layouts, as SIGNS' JPEG
release `images/{train,val,test}_signs/`), class subfolders (labels inferred), or files named by their
label's first digit; the last two are split into train/test by `validation_split` (Keras's semantics).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xpnn.data.binary import CIFAR_CLASSES, find_cifar10, load_cifar10, load_idx
from xpnn.data.images import FORMATS, _pillow, image_folder, index_folder
from xpnn.data.signs import SPLITS, load_signs

KINDS = ("signs", "cifar10", "idx", "image_folder")
IDX_NAMES = {
    "train": ("train-images*idx3*", "train-labels*idx1*"),
    "test": ("t10k-images*idx3*", "t10k-labels*idx1*"),
}


@dataclass
class Data:
    """Train and test arrays, the class names, how to load them again (`spec`) and a one-line description."""

    kind: str
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    class_names: list[str]
    spec: dict[str, Any]
    description: str


def _idx_files(folder: Path) -> dict[str, tuple[Path, Path]] | None:
    found = {}
    for split, patterns in IDX_NAMES.items():
        pair = [sorted(folder.glob(p)) for p in patterns]
        if not all(len(m) == 1 for m in pair):
            return None
        found[split] = (pair[0][0], pair[1][0])
    return found


def _split_folders(folder: Path) -> tuple[Path, Path] | None:
    """(train folder, test folder) when `folder` has train*/ and test*/ (or val*/) subfolders."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir())
    train = [p for p in subs if p.name.lower().startswith("train")]
    test = [p for p in subs if p.name.lower().startswith("test")] or [
        p for p in subs if p.name.lower().startswith("val")
    ]
    return (train[0], test[0]) if len(train) == 1 and len(test) == 1 else None


def _label_mode(folder: Path) -> str:
    """'inferred' for class subfolders, 'filename_digit' for digit-named image files, else a ValueError."""
    if any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        return "inferred"
    files = [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(FORMATS)]
    if files and all(p.name[:1].isdigit() for p in files):
        return "filename_digit"
    raise ValueError(
        f"{folder} is not a data folder xpnn recognizes: expected SIGNS' .h5 files, CIFAR-10's data_batch_*.bin, "
        "MNIST's *-idx3-ubyte/*-idx1-ubyte files, class subfolders of images, train/test subfolders, "
        "or images named by their label's digit."
    )


def detect_data(path: str | os.PathLike) -> tuple[str, str]:
    """(kind, description) of the data at `path`: kind is one of KINDS. Looks at names only, reads no pixels."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"data path {folder} is not a folder; --data takes a folder.")
    if all((folder / SPLITS[s][0]).is_file() for s in SPLITS):
        return "signs", f"SIGNS (HDF5) from {folder}"
    cifar = find_cifar10(folder)
    if cifar is not None:
        return "cifar10", f"CIFAR-10 (binary version) from {cifar}"
    idx = _idx_files(folder)
    if idx is not None:
        return (
            "idx",
            f"IDX images and labels (MNIST layout) from {folder}: {idx['train'][0].name}, {idx['test'][0].name}",
        )
    split = _split_folders(folder)
    if split is not None:
        parts = []
        for sub in split:
            files, _, names = index_folder(sub, _label_mode(sub))
            parts.append(f"{sub.name}/ {len(files)} images")
        return "image_folder", f"image folder {folder}: {', '.join(parts)}, {len(names)} classes"
    mode = _label_mode(folder)
    files, _, names = index_folder(folder, mode)
    how = "class subfolders" if mode == "inferred" else "labels from file names' first digit"
    return "image_folder", f"image folder {folder}: {len(files)} images, {len(names)} classes ({how})"


def _first_image_size(folder: Path) -> tuple[int, int]:
    """(height, width) of the first image in `folder`, read from its header."""
    files, _, _ = index_folder(folder, _label_mode(folder))
    with _pillow().open(files[0]) as img:
        return img.size[1], img.size[0]


def load_data(
    path: str | os.PathLike,
    image_size: tuple[int, int] | None = None,
    color_mode: str = "rgb",
    validation_split: float = 0.2,
    seed: int = 0,
) -> Data:
    """Train and test data from `path` (see detect_data). Image folders: `image_size` defaults to the first
    image's size; without split subfolders, `validation_split` of the files (shuffled by `seed`) are the test set."""
    kind, description = detect_data(path)
    folder = Path(path).resolve()
    spec: dict[str, Any] = {"path": str(folder)}
    if kind == "signs":
        train, test = load_signs(folder)
        names = [str(i) for i in range(6)]
    elif kind == "cifar10":
        train, test = load_cifar10(folder)
        names = list(CIFAR_CLASSES)
    elif kind == "idx":
        files = _idx_files(folder)
        train, test = load_idx(*files["train"]), load_idx(*files["test"])  # type: ignore[index]
        names = [str(i) for i in range(10)]
    else:
        split = _split_folders(folder)
        first = split[0] if split else folder
        size = tuple(image_size) if image_size is not None else _first_image_size(first)
        spec.update(image_size=list(size), color_mode=color_mode)
        if split is not None:
            tr = image_folder(split[0], size, color_mode, _label_mode(split[0]), shuffle=False)
            te = image_folder(split[1], size, color_mode, _label_mode(split[1]), shuffle=False)
            if tr.class_names != te.class_names:
                raise ValueError(
                    f"{split[0].name}/ has classes {tr.class_names} but {split[1].name}/ has {te.class_names}."
                )
        else:
            spec.update(validation_split=validation_split, seed=seed)
            tr, te = image_folder(folder, size, color_mode, _label_mode(folder), validation_split, "both", seed)  # type: ignore[misc]
        train, test, names = (tr.x, tr.y), (te.x, te.y), tr.class_names
        description += f"; {len(train[0])} train / {len(test[0])} test images at {size[0]}x{size[1]}"
    return Data(kind, train, test, names, spec, description)
