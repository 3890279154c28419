"""What an HDF5 file from a stranger may hold, checked from its metadata before any of its data is read.

HDF5 can make a read reach outside the file: an `ExternalLink` opens another file, a virtual dataset
maps other files' datasets (and reads zeros where one is missing), a dataset with external raw storage
reads the bytes of any file named in it, and soft links can loop. xpnn writes none of these, so
`check_structure` refuses them all, naming the object, walking the links with `getlink=True` so that no
link is followed. It also refuses datasets whose bytes are not all stored in the file (declared larger
than what is there: a 32 KiB file cannot make xpnn allocate gigabytes) or that are filtered (compression
could need a plugin). This is the safety safetensors gives by construction; Keras's .h5 loader has none.

`content_sha256` is the checksum xpnn keeps in format 2 files: every attribute and dataset, in path order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import h5py
import numpy as np

from xpnn.errors import ModelFileError

MAX_OBJECTS = 10_000  # groups + datasets; an xpnn model has two per weight at most
MAX_DEPTH = 8  # xpnn writes /optimizer/m/000: depth 3
HASH_CHUNK = 1 << 22  # bytes of a dataset hashed at a time, so a check never holds a whole large array
CHECKSUM_ATTR = "sha256"
DATA_KINDS = "biufS"  # numbers and fixed-length bytes; variable-length and object types are never written


class UnsafeFileError(ModelFileError):
    """An HDF5 file holds something xpnn refuses to read (a link outside it, a dataset not stored in it)."""


@dataclass
class Contents:
    """A checked file's objects by path: its groups and datasets (only hard links, each object once)."""

    groups: dict[str, h5py.Group] = field(default_factory=dict)
    datasets: dict[str, h5py.Dataset] = field(default_factory=dict)


def _refuse(file: str, path: str, what: str) -> UnsafeFileError:
    return UnsafeFileError(f"{file}: {path} {what}; xpnn never writes this and refuses to read the file.")


def _check_dataset(file: str, path: str, ds: h5py.Dataset) -> None:
    if ds.is_virtual:
        raise _refuse(file, path, "is a virtual dataset mapping other files")
    if ds.external:
        raise _refuse(file, path, f"keeps its data in an external file ({ds.external[0][0]!r})")
    plist = ds.id.get_create_plist()
    if plist.get_nfilters():
        raise _refuse(file, path, "is compressed or filtered")
    if ds.dtype.kind not in DATA_KINDS or ds.dtype.names is not None or ds.dtype.subdtype is not None:
        raise _refuse(file, path, f"has data type {ds.dtype}, not numbers")
    stored = ds.id.get_storage_size()
    if stored != ds.nbytes:
        raise _refuse(file, path, f"declares shape {ds.shape} ({ds.nbytes} bytes) but stores {stored} bytes")


def check_structure(f: h5py.File, where: str | None = None) -> Contents:
    """Walk every link of `f` without following any; refuse external, soft and user-defined links,
    virtual, external-storage, filtered or not fully stored datasets, and deep or huge trees.

    `where` names the file in errors (default: its file name; an in-memory file has none)."""
    file = where or f.filename
    contents = Contents(groups={"/": f})
    seen = {h5py.h5o.get_info(f.id).addr}
    pending: list[tuple[h5py.Group, str, int]] = [(f, "", 0)]
    while pending:
        group, prefix, depth = pending.pop()
        for name in group:
            path = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise _refuse(file, path, f"is an external link to {link.filename}:{link.path}")
            if isinstance(link, h5py.SoftLink):
                raise _refuse(file, path, f"is a soft link to {link.path}")
            if not isinstance(link, h5py.HardLink):
                raise _refuse(file, path, "is a user-defined link")
            obj = group[name]
            addr = h5py.h5o.get_info(obj.id).addr
            if addr in seen:
                raise _refuse(file, path, "is a second link to an object already in the file (or a loop)")
            seen.add(addr)
            if len(seen) > MAX_OBJECTS:
                raise _refuse(file, "/", f"holds more than {MAX_OBJECTS} objects")
            if isinstance(obj, h5py.Dataset):
                _check_dataset(file, path, obj)
                contents.datasets[path] = obj
            elif isinstance(obj, h5py.Group):
                if depth + 1 > MAX_DEPTH:
                    raise _refuse(file, path, f"nests groups deeper than {MAX_DEPTH}")
                contents.groups[path] = obj
                pending.append((obj, path, depth + 1))
            else:
                raise _refuse(file, path, f"is a {type(obj).__name__}")
    return contents


def _attr_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"b" + value
    arr = np.asarray(value)
    if arr.dtype.kind == "O":
        return b"o" + repr(arr.tolist()).encode()
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return f"n{arr.dtype.str}{arr.shape}".encode() + arr.tobytes()


def _dataset_digest(ds: h5py.Dataset) -> bytes:
    """SHA-256 of a dataset's shape, type and little-endian bytes, read a few MiB at a time."""
    h = hashlib.sha256(f"{ds.dtype.newbyteorder('<').str}{ds.shape}".encode())
    dtype = ds.dtype.newbyteorder("<")
    if ds.shape == ():
        h.update(np.asarray(ds[()], dtype=dtype).tobytes())
    elif ds.size:
        row = max(1, ds.nbytes // max(1, ds.shape[0]))
        step = max(1, HASH_CHUNK // row)
        for start in range(0, ds.shape[0], step):
            h.update(np.ascontiguousarray(ds[start : start + step], dtype=dtype).data)
    return h.digest()


def content_sha256(contents: Contents) -> str:
    """SHA-256 over every attribute (but the checksum itself) and every dataset of a checked file, by path."""
    h = hashlib.sha256()
    records: list[tuple[str, bytes]] = []
    for path, group in contents.groups.items():
        for name in group.attrs:
            if path == "/" and name == CHECKSUM_ATTR:
                continue
            records.append((f"{path}@{name}", hashlib.sha256(_attr_bytes(group.attrs[name])).digest()))
    for path, ds in contents.datasets.items():
        for name in ds.attrs:
            records.append((f"{path}@{name}", hashlib.sha256(_attr_bytes(ds.attrs[name])).digest()))
        records.append((path, _dataset_digest(ds)))
    for key, digest in sorted(records):
        h.update(key.encode("utf-8", "surrogatepass") + b"\0" + digest)
    return h.hexdigest()
