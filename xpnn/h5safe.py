"""Checks for HDF5 files from strangers: only plain, hard-linked groups and numeric datasets stored inside the file.

HDF5 can do far more than a weights file needs: soft and external links (which reach other files),
virtual datasets (which read other files), external raw storage (bytes kept in other files) and
arbitrary filters. `check_tree` walks a file once and refuses all of these by name before any data
is read; `read_dataset` checks a dataset's shape against the architecture before reading it.
The counterpart of safetensors' rule: everything declared and checked before a byte of data is read.
"""

from __future__ import annotations

import h5py
import numpy as np

# HDF5 filter ids that only change how bytes are stored (deflate, shuffle, fletcher32 checksums).
PLAIN_FILTERS = {h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_FLETCHER32}
MAX_OBJECTS = 100_000


def _dataset_problem(ds: h5py.Dataset) -> str | None:
    if ds.is_virtual:
        return "a virtual dataset (it reads other files)"
    plist = ds.id.get_create_plist()
    if plist.get_external_count() > 0:
        return "external raw storage (its bytes live in another file)"
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in PLAIN_FILTERS:
            return f"an HDF5 filter xpnn does not read (id {code})"
    if ds.dtype.kind not in "fiu" or ds.dtype.itemsize > 8:
        return f"a non-numeric dtype {ds.dtype}"
    return None


def check_tree(root: h5py.Group, where: str) -> None:
    """Raise a ValueError listing every soft/external link, virtual/external dataset or odd filter under `root`."""
    problems: list[str] = []
    stack = [root]
    seen = 0
    while stack:
        group = stack.pop()
        for key in group.keys():
            seen += 1
            if seen > MAX_OBJECTS:
                raise ValueError(f"{where} holds more than {MAX_OBJECTS} HDF5 objects; not a weights file xpnn reads.")
            path = f"{group.name.rstrip('/')}/{key}"
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                problems.append(f"{path}: a {type(link).__name__} (links may reach other files)")
                continue
            obj = group[key]
            if isinstance(obj, h5py.Group):
                stack.append(obj)
            elif isinstance(obj, h5py.Dataset):
                problem = _dataset_problem(obj)
                if problem:
                    problems.append(f"{path}: {problem}")
            else:
                problems.append(f"{path}: an HDF5 object of type {type(obj).__name__}")
    if problems:
        raise ValueError(
            f"{where} holds HDF5 features xpnn refuses in files from others:\n  "
            + "\n  ".join(problems)
            + "\nSave the model again with plain datasets (Keras' own save does)."
        )


def read_dataset(ds: h5py.Dataset, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The dataset's values after checking that its declared shape is `shape` (nothing is read before)."""
    if tuple(ds.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(ds.shape)} in the file; the architecture needs {tuple(shape)}.")
    return np.asarray(ds[()])
