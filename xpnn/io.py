"""Model files: architecture, weights (TF layouts), dtype and optimizer state in one HDF5 file, written atomically.

`save_model` writes to a temporary file in the target's folder, flushes and fsyncs it, then `os.replace`s
it over the target, so a crash or a full disk leaves the old file or the new one, never half of each.
Checkpoints (xpnn.runs) use the same file with an extra `train_state` group.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from xpnn import layers as layer_module
from xpnn import optimizers as optimizer_module
from xpnn.backends import get_backend
from xpnn.layers.base import Layer
from xpnn.optimizers import Optimizer

if TYPE_CHECKING:
    from xpnn.model import Sequential

FORMAT = "xpnn-model"
FORMAT_VERSION = 1

PathLike = str | os.PathLike


# ---- atomic writes ---------------------------------------------------------------------------------
def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(
    path: PathLike, write: Callable[[Path], None], before_replace: Callable[[], None] | None = None
) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it over `path`.

    On any error the temporary file is removed and `path` is left as it was; a full disk or a
    read-only folder becomes an OSError that names the file and the fix.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save {target}: the folder {folder} does not exist; create it first.")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a saved file gets the usual permissions
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _write_error(target, exc) from exc
        raise
    fsync_dir(folder)
    return target


def _write_error(target: Path, exc: OSError) -> OSError:
    code = exc.errno
    if code is None and isinstance(exc.__cause__, OSError):
        code = exc.__cause__.errno
    if code == errno.ENOSPC or "No space left" in str(exc):
        return OSError(
            errno.ENOSPC,
            f"no space left on the device while saving {target}; nothing was half-written "
            "(any previous file there is unchanged). Free some disk space or save to another folder.",
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OSError(code, f"cannot write {target}: {exc.strerror or exc}. Save to a folder you can write to.")
    return OSError(code, f"saving {target} failed ({exc}); any previous file there is unchanged.")


# ---- what goes in the file -------------------------------------------------------------------------
def layer_configs(model: Sequential) -> list[dict[str, Any]]:
    """[{"class_name": "Conv2D", "config": {...}}, ...]: enough to rebuild the stack."""
    return [{"class_name": type(layer).__name__, "config": layer.get_config()} for layer in model.layers]


def layers_from_configs(configs: Any, where: str = "layers") -> list[Layer]:
    """Layers from `layer_configs` output; unknown names and bad arguments say which entry is wrong."""
    if not isinstance(configs, list) or not configs:
        raise TypeError(f"{where} must be a non-empty list of {{class_name, config}} tables; got {configs!r}.")
    known = layer_module.layer_classes()  # built-ins and register_keras_serializable classes
    out = []
    for i, entry in enumerate(configs):
        if not isinstance(entry, dict) or "class_name" not in entry:
            raise TypeError(f"{where}[{i}] must be a table with class_name (and config); got {entry!r}.")
        extra = set(entry) - {"class_name", "config"}
        if extra:
            raise ValueError(f"{where}[{i}] has unknown key(s) {sorted(extra)}; only class_name and config are read.")
        name = entry["class_name"]
        if name not in known:
            import difflib

            close = difflib.get_close_matches(str(name), list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}[{i}]: unknown layer {name!r}; choose one of {', '.join(sorted(known))}.{hint}")
        config = entry.get("config", {}) or {}
        if not isinstance(config, dict):
            raise TypeError(f"{where}[{i}] ({name}): config must be a table of arguments; got {config!r}.")
        try:
            out.append(known[name](**config))
        except TypeError as exc:
            raise TypeError(f"{where}[{i}] ({name}): {exc}. See help(xpnn.layers.{name}) for its arguments.") from None
        except ValueError as exc:
            raise ValueError(f"{where}[{i}] ({name}): {exc}") from None
    return out


def optimizer_config(optimizer: Optimizer) -> dict[str, Any]:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def optimizer_from_config(spec: dict[str, Any]) -> Optimizer:
    cls = getattr(optimizer_module, str(spec.get("class_name")), None)
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
        raise ValueError(f"unknown optimizer class {spec.get('class_name')!r}; xpnn has SGD and Adam.")
    return cls(**spec.get("config", {}))


def _write_arrays(group: h5py.Group, arrays: list[np.ndarray]) -> None:
    """Datasets "000", "001", ... in order (the order is the meaning)."""
    for i, arr in enumerate(arrays):
        group.create_dataset(f"{i:03d}", data=arr)


def _read_arrays(group: h5py.Group) -> list[np.ndarray]:
    return [np.asarray(group[key]) for key in sorted(group.keys())]


def write_model(f: h5py.File, model: Sequential, optimizer: Optimizer | None) -> None:
    """Fill an open HDF5 file with the model (and the optimizer's config and state)."""
    from xpnn import __version__

    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["xpnn_version"] = __version__
    f.attrs["dtype"] = str(model.dtype)
    f.attrs["input_shape"] = json.dumps(list(model.input_shape or ()))
    f.attrs["layers"] = json.dumps(layer_configs(model))
    _write_arrays(f.create_group("weights"), model.get_weights())
    if optimizer is not None:
        group = f.create_group("optimizer")
        group.attrs["config"] = json.dumps(optimizer_config(optimizer))
        backend = get_backend()
        for key, value in optimizer.get_state().items():
            if isinstance(value, list):
                _write_arrays(group.create_group(key), [np.asarray(backend.to_host(a)) for a in value])
            else:
                group.attrs[f"state.{key}"] = json.dumps(value)


def save_model(model: Sequential, path: PathLike, optimizer: Optimizer | None = None) -> Path:
    """Save `model` and `optimizer` (default: the one it last trained with, else its compiled one) atomically."""
    model._require_built()
    opt = optimizer if optimizer is not None else getattr(model, "_last_optimizer", None) or model.optimizer

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            write_model(f, model, opt)

    return atomic_write(path, write)


# ---- reading ---------------------------------------------------------------------------------------
def open_model_file(path: PathLike, what: str = "model") -> h5py.File:
    """Open an xpnn HDF5 file for reading, or raise an error that names the file and says what is wrong."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{what} file {file} does not exist; check the path (a run keeps it as model.h5).")
    if file.is_dir():
        raise ValueError(f"{file} is a folder, not a {what} file; pass the .h5 inside it (e.g. {file / 'model.h5'}).")
    try:
        f = h5py.File(file, "r")
    except OSError as exc:
        raise ValueError(
            f"{file} is not a readable HDF5 {what} file (truncated, corrupted, or another format: {exc}). "
            "Save it again with model.save(), or use a run's previous checkpoint."
        ) from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise ValueError(
            f"{file} is an HDF5 file but not an xpnn {what} (no format='{FORMAT}' attribute; a Keras .h5?). "
            "Rebuild the model in xpnn and load the weights with model.set_weights(...)."
        )
    version = int(f.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        f.close()
        raise ValueError(
            f"{file} uses xpnn model format {version}, newer than this xpnn reads ({FORMAT_VERSION}); upgrade xpnn."
        )
    return f


def read_model(f: h5py.File) -> tuple[Sequential, Optimizer | None]:
    """The model and optimizer held in an open xpnn file (the caller has checked its format)."""
    from xpnn.model import Sequential

    try:
        layers = layers_from_configs(json.loads(f.attrs["layers"]))
        model = Sequential(layers, dtype=str(f.attrs["dtype"]))
        model.build(tuple(json.loads(f.attrs["input_shape"])), seed=0)
        model.set_weights(_read_arrays(f["weights"]))
        optimizer = None
        if "optimizer" in f:
            group = f["optimizer"]
            optimizer = optimizer_from_config(json.loads(group.attrs["config"]))
            state: dict[str, Any] = {
                k[len("state.") :]: json.loads(v) for k, v in group.attrs.items() if k.startswith("state.")
            }
            state.update({k: _read_arrays(group[k]) for k in group.keys()})
            if state:
                optimizer.set_state(state)
    except (ValueError, TypeError) as exc:  # a layer config or weight that does not fit: say which file
        raise type(exc)(f"{f.filename} holds a model xpnn cannot rebuild: {exc}") from None
    except (KeyError, OSError) as exc:
        raise ValueError(
            f"{f.filename} is an xpnn file but a part of it is missing or damaged ({exc}); "
            "it may have been truncated. Use another copy or a run's checkpoint."
        ) from None
    return model, optimizer


def load_model(path: PathLike) -> Sequential:
    """The model saved at `path`, compiled with its saved optimizer (state included) when there is one."""
    with open_model_file(path) as f:
        model, optimizer = read_model(f)
    if optimizer is not None:
        model.optimizer = optimizer
    return model
