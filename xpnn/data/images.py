"""Image folders as arrays, with keras.utils.image_dataset_from_directory's semantics (Pillow reads the files).

`labels="inferred"`: one class per subfolder, classes in sorted order, every .bmp/.gif/.jpeg/.jpg/.png file
below a class folder (walked in sorted order, as Keras's index_directory does). `labels="filename_digit"`:
the files directly below `path`, each labelled by the first digit of its name (SIGNS' JPEG release:
`0_IMG_5942.jpg` is class 0). Arrays instead of a tf.data pipeline: the files are shuffled once with
`np.random.RandomState(seed)` as Keras does (`shuffle=False` keeps the sorted order), then
`validation_split` takes the last `int(split * n)` files for "validation" and the rest for "training", so
Keras and xpnn with the same seed put the same files in each subset. Keras's per-epoch reshuffle of its
pipeline is fit's job here (`shuffle="random"`). Images are resized with Pillow's bilinear filter when they
are not `image_size` already (TF's resize differs in the last bits; same-size images are read exactly).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # Keras's ALLOWLIST_FORMATS
COLOR_MODES = {"rgb": ("RGB", 3), "grayscale": ("L", 1), "rgba": ("RGBA", 4)}
LABEL_MODES = ("inferred", "filename_digit")
SUBSETS = ("training", "validation", "both")
MAX_PIXELS = 64 << 20  # per image, checked from its header before its pixels are decoded
MAX_FILES = 5_000_000


@dataclass
class Images:
    """Images `x` (uint8, (n, h, w, c)), labels `y` (int64), `class_names` and the files they came from.

    TF/Keras counterpart: what keras.utils.image_dataset_from_directory yields, as arrays.

    `x, y = image_folder(...)` unpacks to the arrays.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    paths: list[Path] = field(default_factory=list)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.x, self.y))

    def __len__(self) -> int:
        return len(self.x)


def _pillow():  # Pillow is optional (the cli extra)
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "reading image folders needs Pillow: pip install pillow (or pip install 'xpnn[cli]')."
        ) from None
    return Image


def _walk_images(folder: Path) -> list[Path]:
    """Image files below `folder`, in Keras's order: directories sorted by path, files sorted by name."""
    found = []
    for root, _, files in sorted(os.walk(folder), key=lambda entry: entry[0]):
        for name in sorted(files):
            if name.lower().endswith(FORMATS):
                found.append(Path(root) / name)
                if len(found) > MAX_FILES:
                    raise ValueError(f"{folder} holds more than {MAX_FILES} images; split it into smaller folders.")
    return found


def index_folder(path: str | os.PathLike, labels: str = "inferred") -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels, class_names) in sorted order, before any shuffling; a ValueError when none are found."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder.")
    if labels == "inferred":
        class_names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_names:
            raise ValueError(
                f"{folder} has no class subfolders; labels='inferred' takes one subfolder per class "
                "(or use labels='filename_digit' for files named by their label's digit)."
            )
        files: list[Path] = []
        ys: list[int] = []
        for index, name in enumerate(class_names):
            found = _walk_images(folder / name)
            files += found
            ys += [index] * len(found)
        if not files:
            raise ValueError(f"{folder}: its class subfolders {class_names} hold no {'/'.join(FORMATS)} files.")
        return files, np.asarray(ys, dtype=np.int64), class_names
    if labels == "filename_digit":
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(FORMATS))
        if not files:
            raise ValueError(f"{folder} holds no {'/'.join(FORMATS)} files directly inside it.")
        bad = [p.name for p in files if not p.name[:1].isdigit()]
        if bad:
            raise ValueError(
                f"{folder}: {len(bad)} file names do not start with their label's digit (e.g. {bad[0]!r}); "
                "labels='filename_digit' needs names like '3_photo.jpg'."
            )
        y = np.asarray([int(p.name[0]) for p in files], dtype=np.int64)
        return files, y, [str(i) for i in range(int(y.max()) + 1)]
    raise ValueError(f"labels must be one of {LABEL_MODES}; got {labels!r}.")


def read_image(path: Path, image_size: tuple[int, int], color_mode: str = "rgb") -> np.ndarray:
    """One image as uint8 (h, w, c); a ValueError naming the file when it is not a readable image."""
    Image = _pillow()
    mode, _ = COLOR_MODES[color_mode]
    h, w = image_size
    try:
        with Image.open(path) as img:
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise ValueError(f"image {path} declares {img.size[0]}x{img.size[1]} pixels, above {MAX_PIXELS}.")
            img = img.convert(mode)
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(
            f"cannot read {path} as an image ({type(exc).__name__}: {exc}); remove or replace it."
        ) from None
    return arr.reshape(h, w, -1)


def _check_split(validation_split: float | None, subset: str | None, shuffle: bool, seed: int | None) -> None:
    """Keras's check_validation_split_arg."""
    if validation_split is not None and not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be between 0 and 1; got {validation_split}.")
    if (validation_split is not None) != (subset is not None):
        raise ValueError("subset and validation_split go together: set both (e.g. 0.2 and 'training') or neither.")
    if subset is not None and subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}; got {subset!r}.")
    if validation_split is not None and shuffle and seed is None:
        raise ValueError("with validation_split and shuffling, pass a seed so training and validation do not overlap.")


def image_folder(
    path: str | os.PathLike,
    image_size: tuple[int, int] = (256, 256),
    color_mode: str = "rgb",
    labels: str = "inferred",
    validation_split: float | None = None,
    subset: str | None = None,
    seed: int | None = None,
    shuffle: bool = True,
) -> Images | tuple[Images, Images]:
    """Images and labels from a folder, as keras.utils.image_dataset_from_directory would list them.

    Returns `Images` (unpacks as `x, y`; `.class_names`), or (training, validation) for subset="both".
    """
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {sorted(COLOR_MODES)}; got {color_mode!r}.")
    size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be (height, width) with positive sizes; got {image_size!r}.")
    _check_split(validation_split, subset, shuffle, seed)
    files, y, class_names = index_folder(path, labels)
    order = np.arange(len(files))
    if shuffle:
        seed = int(np.random.randint(1e6)) if seed is None else seed
        np.random.RandomState(seed).shuffle(order)  # Keras shuffles paths and labels with this same stream
    splits = {"all": order}
    if validation_split is not None:
        n_val = int(validation_split * len(files))
        splits = {"training": order[: len(order) - n_val], "validation": order[len(order) - n_val :]}
    wanted = ["training", "validation"] if subset == "both" else [subset or "all"]
    out = []
    for name in wanted:
        idx = splits[name]
        x = np.zeros((len(idx), *size, COLOR_MODES[color_mode][1]), dtype=np.uint8)
        for row, i in enumerate(idx):
            x[row] = read_image(files[i], size, color_mode)  # type: ignore[arg-type]
        out.append(Images(x, y[idx], class_names, [files[i] for i in idx]))
    return (out[0], out[1]) if subset == "both" else out[0]


def predict_inputs(
    paths: list[str | os.PathLike] | str | os.PathLike,
    image_size: tuple[int, int],
    color_mode: str = "rgb",
    resize: bool = True,
) -> tuple[np.ndarray, list[Path]]:
    """uint8 (n, h, w, c) images from files and folders (a folder's images in Keras's order, hidden ones skipped).

    For `xpnn predict RUN folder/`. With `resize=False` an image of another size is an error that says so.
    """
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {sorted(COLOR_MODES)}; got {color_mode!r}.")
    files: list[Path] = []
    for p in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        path = Path(p)
        if path.is_dir():
            found = [f for f in _walk_images(path) if not any(s.startswith(".") for s in f.relative_to(path).parts)]
            if not found:
                raise ValueError(f"{path} holds no {'/'.join(FORMATS)} files.")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image {path} does not exist.")
    h, w = (int(s) for s in image_size)
    if not resize:
        Image = _pillow()
        for file in files:
            try:
                with Image.open(file) as img:
                    size = img.size
            except OSError as exc:
                raise ValueError(f"cannot read {file} as an image ({exc}).") from None
            if size != (w, h):
                raise ValueError(
                    f"image {file} is {size[0]}x{size[1]}; the model takes {w}x{h} images. Resize it, or let "
                    "xpnn resize it (bilinear)."
                )
    x = np.stack([read_image(f, (h, w), color_mode) for f in files])
    return x, files
