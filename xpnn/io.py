"""Model files: architecture, weights (TF layouts), dtype and optimizer state in one HDF5 file, written atomically.

Writing: `write_h5` builds the whole HDF5 image in memory (h5py on a BytesIO), seals it with a SHA-256 of
its contents, and writes the bytes with plain `os.write` to a temporary file beside the target, fsyncs it
and `os.replace`s it over the target. HDF5 itself never meets the disk, so a full disk is one OSError from
`os.write` (h5py's own close on ENOSPC raises RuntimeError or crashes), the old file stays whole and the
temporary file is removed. Checkpoints (xpnn.runs) use the same file with an extra `train_state` group.

Reading: a file from a stranger is safe to open. `open_model_file` walks its links without following them
and refuses anything that reaches outside it (xpnn.h5check), then verifies the checksum; `read_model`
checks every declared shape and dtype against the architecture before it reads an array, and reads each
weight straight into the built model (peak memory about the model's size plus the optimizer's state).

Format versions: 1 (xpnn 0.x before the checksum) has no `sha256` attribute and still loads; 2 adds the root
attribute `sha256` (xpnn.h5check.content_sha256 over every other attribute and dataset) and is what `write_h5`
writes. A format 2 file whose checksum is missing or wrong is refused as corrupt.
"""

from __future__ import annotations

import errno
import io as _io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xpnn import layers as layer_module
from xpnn import optimizers as optimizer_module
from xpnn.backends import get_backend
from xpnn.checkpoint_schema import MAX_JSON_BYTES, check_format_version, parse_json_attr
from xpnn.errors import ModelFileError
from xpnn.h5check import CHECKSUM_ATTR, Contents, check_structure, content_sha256
from xpnn.layers.base import Layer
from xpnn.model import Model
from xpnn.optimizers import Optimizer
from xpnn.version import __version__

FORMAT = "xpnn-model"
FORMAT_VERSION = 2  # the newest this xpnn reads and writes: 1 + the sha256 checksum
UNSEALED_VERSION = 1  # what write_model marks; write_h5 seals the file and raises it to FORMAT_VERSION
MAX_SAMPLE_ELEMENTS = 1 << 28  # values per sample of the input and of any layer's output (1 GiB in float32)
WRITE_CHUNK = 1 << 20

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
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc):
        folder = target.parent if str(target.parent) else Path(".")
        try:
            free = f" (the disk holding {folder} has {shutil.disk_usage(folder).free} bytes free)"
        except OSError:
            free = ""
        return OSError(
            errno.ENOSPC,
            f"no space left on the device while saving {target}{free}; nothing was half-written "
            "(any previous file there is unchanged). Free some disk space or save to another folder.",
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OSError(code, f"cannot write {target}: {exc.strerror or exc}. Save to a folder you can write to.")
    return OSError(code, f"saving {target} failed ({exc}); any previous file there is unchanged.")


def write_bytes(tmp: Path, data: bytes | memoryview) -> None:
    """Write `data` to `tmp` with plain os.write calls (a short write continues, an error is an OSError)."""
    view = memoryview(data).cast("B")
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done : done + WRITE_CHUNK])
    finally:
        os.close(fd)


def seal(f: h5py.File) -> None:
    """Mark an xpnn file as format 2 and store the SHA-256 of everything in it (the last step of a write)."""
    f.attrs["format_version"] = FORMAT_VERSION
    if CHECKSUM_ATTR in f.attrs:
        del f.attrs[CHECKSUM_ATTR]
    f.attrs[CHECKSUM_ATTR] = content_sha256(check_structure(f))


def h5_image(fill: Callable[[h5py.File], None]) -> memoryview:
    """The bytes of an HDF5 file made by `fill(f)` in memory (sealed when it is an xpnn file); no disk involved."""
    buf = _io.BytesIO()
    with h5py.File(buf, "w") as f:
        fill(f)
        if f.attrs.get("format") == FORMAT:
            seal(f)
    return buf.getbuffer()


def write_h5(
    path: PathLike, fill: Callable[[h5py.File], None], before_replace: Callable[[], None] | None = None
) -> Path:
    """Atomically write the HDF5 file that `fill(f)` builds: made in memory, then written by `atomic_write`.

    Any error (a full disk included) leaves `path` as it was and no temporary file behind.
    """

    def write(tmp: Path) -> None:
        image = h5_image(fill)
        try:
            write_bytes(tmp, image)
        finally:
            image.release()

    return atomic_write(path, write, before_replace)


# ---- what goes in the file -------------------------------------------------------------------------
def layer_configs(model: Model) -> list[dict[str, Any]]:
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
    """{"class_name", "config"} of an optimizer, as a model file stores it (Keras's serialization)."""
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}


def optimizer_from_config(spec: dict[str, Any]) -> Optimizer:
    """Only xpnn's optimizer classes (not the base class or any other name in the module)."""
    return optimizer_module.optimizer_from_config(spec)


def _write_arrays(group: h5py.Group, arrays: list[np.ndarray]) -> None:
    """Datasets "000", "001", ... in order (the order is the meaning)."""
    for i, arr in enumerate(arrays):
        group.create_dataset(f"{i:03d}", data=arr)


def write_model(f: h5py.File, model: Model, optimizer: Optimizer | None) -> None:
    """Fill an open HDF5 file with the model (and the optimizer's config and state)."""

    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = UNSEALED_VERSION  # write_h5 seals it (checksum) and marks it FORMAT_VERSION
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


def save_model(model: Model, path: PathLike, optimizer: Optimizer | None = None) -> Path:
    """Save `model` and `optimizer` (default: the one it last trained with, else its compiled one) atomically.

    TF/Keras counterpart: keras.saving.save_model, in xpnn's HDF5 format.
    """
    model._require_built()
    opt = optimizer if optimizer is not None else getattr(model, "_last_optimizer", None) or model.optimizer

    return write_h5(path, lambda f: write_model(f, model, opt))


# ---- reading ---------------------------------------------------------------------------------------
def open_model_file(path: PathLike, what: str = "model") -> h5py.File:
    """Open an xpnn HDF5 file for reading, checked to be safe and whole, or raise an error naming the file.

    Before any attribute or data is read, every link is checked (xpnn.h5check: nothing outside the file,
    every dataset stored in it); then the format, its version and (format 2) the SHA-256 of the contents.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"{what} file {file} does not exist; check the path (a run keeps it as model.h5).")
    if file.is_dir():
        raise ValueError(f"{file} is a folder, not a {what} file; pass the .h5 inside it (e.g. {file / 'model.h5'}).")
    try:
        f = h5py.File(file, "r")
    except (OSError, RuntimeError) as exc:
        raise ModelFileError(
            f"{file} is not a readable HDF5 {what} file (truncated, corrupted, or another format: {exc}). "
            "Save it again with model.save(), or use a run's previous checkpoint."
        ) from None
    try:
        contents = check_structure(f)
        names = set(f.attrs)  # reading every attribute name surfaces a damaged attribute table here
        if "format" not in names or f.attrs["format"] != FORMAT:
            raise ModelFileError(
                f"{file} is an HDF5 file but not an xpnn {what} (no format='{FORMAT}' attribute; a Keras .h5?). "
                "Rebuild the model in xpnn and load the weights with model.set_weights(...)."
            )
        raw_version = f.attrs["format_version"] if "format_version" in names else None
        try:
            version = check_format_version(raw_version, str(file), FORMAT_VERSION)
        except ValueError as exc:
            raise ModelFileError(str(exc)) from None
        if version >= 2 and f.attrs.get(CHECKSUM_ATTR) != content_sha256(contents):
            raise ModelFileError(
                f"{file} is corrupt: its contents do not match the SHA-256 stored in it (changed bytes or a "
                "damaged copy). Use another copy or a run's previous checkpoint."
            )
    except ModelFileError:
        f.close()
        raise
    except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:  # h5py's, from a damaged file
        f.close()
        raise _damaged(f"{file}", exc) from None
    return f


def _damaged(file: str, exc: BaseException) -> ModelFileError:
    return ModelFileError(
        f"{file} is an xpnn file but a part of it is missing or damaged ({type(exc).__name__}: {exc}); "
        "it may have been truncated. Use another copy or a run's checkpoint."
    )


def _input_shape(raw: Any, where: str) -> tuple[int, ...]:
    shape = parse_json_attr(raw, f"{where}: input_shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 8
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise ValueError(f"input_shape must be a list of positive sizes, e.g. [64, 64, 3]; got {shape!r:.80}.")
    if math.prod(shape) > MAX_SAMPLE_ELEMENTS:
        raise ValueError(
            f"input_shape {shape} holds {math.prod(shape)} values a sample, more than the {MAX_SAMPLE_ELEMENTS} "
            "xpnn loads; refused before building."
        )
    return tuple(shape)


def _check_layer_sizes(layers: list[Layer], input_shape: tuple[int, ...]) -> None:
    """Refuse, before any weight is allocated, a stack whose layers declare outputs beyond MAX_SAMPLE_ELEMENTS."""
    shape = input_shape
    for i, layer in enumerate(layers):
        try:
            shape = tuple(int(s) for s in layer.compute_output_shape(shape))
        except (ValueError, TypeError):
            return  # build says what is wrong with the stack
        if math.prod(shape) > MAX_SAMPLE_ELEMENTS:
            raise ValueError(
                f"layer {i} ({layer.name}) outputs {shape}, more than {MAX_SAMPLE_ELEMENTS} values a sample; "
                "refused before building."
            )


class _OverBudget(Exception):
    pass


class _BudgetRng:
    """The generator of a dry build: counts the values initializers ask for and stops past `budget`.

    Float draws return zeros (a dry build needs shapes, not values); other calls go to a real generator.
    """

    ZEROS = ("uniform", "standard_normal", "normal", "random")

    def __init__(self, budget: int) -> None:
        self.left = budget
        self._real = np.random.default_rng(0)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        def draw(*args: Any, **kwargs: Any) -> Any:
            size = kwargs.get("size")
            n = 1 if size is None else math.prod(np.atleast_1d(np.asarray(size, dtype=np.int64)).tolist())
            if n > self.left:
                raise _OverBudget(n)
            self.left -= n
            return _zero_view(size) if name in self.ZEROS and size is not None else attr(*args, **kwargs)

        return draw


def _zero_view(size: Any) -> np.ndarray:
    """Zeros of `size` as a read-only broadcast view: no memory (a build whose weights the file overwrites)."""
    return np.broadcast_to(np.float64(0.0), tuple(int(s) for s in np.atleast_1d(np.asarray(size, dtype=np.int64))))


class _NoDrawRng(_BudgetRng):
    """The generator of the real build before a load: float draws are zero views, so building takes only the
    model's own arrays (each weight is then read straight into them), not a float64 draw per layer."""

    def __init__(self) -> None:
        super().__init__(budget=1 << 62)


def _dry_build(
    configs: Any, input_shape: tuple[int, ...], dtype: str, budget: int
) -> list[tuple[str, tuple[int, ...]]] | None:
    """The weight shapes the architecture would create, found by building throwaway copies of its layers one at a
    time with a generator that refuses to draw more than `budget` values (the weights the file really stores).

    Initializer arguments are drawn randomly here (zeros would bypass the count), so a layer that would allocate
    gigabytes is refused before it does. None when a layer cannot be built: the real build then says why.
    """
    dry = [
        {
            **entry,
            "config": {k: "glorot_uniform" if k.endswith("_initializer") else v for k, v in entry["config"].items()},
        }
        if isinstance(entry.get("config"), dict)
        else entry
        for entry in configs
    ]
    rng, shape, shapes = _BudgetRng(budget), input_shape, []
    for i, layer in enumerate(layers_from_configs(dry)):
        try:
            shape = layer.build(shape, rng, np.dtype(dtype))  # type: ignore[arg-type]
        except _OverBudget as over:
            raise ValueError(
                f"layer {i} ({layer.name}) would draw {over.args[0]} initial weights but the file stores only "
                f"{budget} weight values in all; refused before building."
            ) from None
        except (ValueError, TypeError):
            return None
        shapes.extend((f"{layer.name} {key}", tuple(w.shape)) for key, w in layer.weights.items())
        layer.params, layer.non_trainable = {}, {}
    return shapes


def _array_list(contents: Contents, prefix: str) -> list[h5py.Dataset]:
    """The datasets "000", "001", ... of group `prefix`, in order; anything else there is refused."""
    group = contents.groups.get(prefix)
    if group is None:
        raise ValueError(f"{prefix} is not a group of arrays.")
    names = list(group.keys())
    expected = [f"{i:03d}" for i in range(len(names))]
    if sorted(names, key=lambda n: (len(n), n)) != expected:
        raise ValueError(f"{prefix} must hold arrays named 000, 001, ... in order; got {sorted(names)[:5]}.")
    out = []
    for name in expected:
        ds = contents.datasets.get(f"{prefix}/{name}")
        if ds is None:
            raise ValueError(f"{prefix}/{name} is not an array.")
        out.append(ds)
    return out


def _check_declared(
    datasets: list[h5py.Dataset], targets: list[tuple[str, tuple[int, ...]]], dtype: np.dtype | None = None
) -> None:
    """Compare each dataset's declared shape and dtype (metadata only) with what the model needs there."""
    for ds, (what, shape) in zip(datasets, targets):
        if tuple(ds.shape) != tuple(shape):
            raise ValueError(f"{ds.name} ({what}) declares shape {tuple(ds.shape)}; the architecture needs {shape}.")
        if dtype is not None and ds.dtype != dtype:
            raise ValueError(f"{ds.name} ({what}) holds {ds.dtype}; the model is {dtype}.")


def _read_into(ds: h5py.Dataset, target: Any, what: str) -> None:
    """Read a dataset straight into the model's own array (no second copy on the CPU); refuse NaN/Inf."""
    backend = get_backend()
    if isinstance(target, np.ndarray) and target.flags.c_contiguous and target.size:
        ds.read_direct(target)
    elif target.size:
        target[...] = backend.asarray(ds[()])
    xp = np if isinstance(target, np.ndarray) else backend.xp  # optimizer state is read on the host first
    if target.size and not bool(xp.isfinite(target).all()):
        raise ValueError(f"{ds.name} ({what}) holds NaN or Inf; the file is damaged or was saved after divergence.")


def read_model(f: h5py.File, cls: type[Model] | None = None) -> tuple[Model, Optimizer | None]:
    """The model (a `cls`, default `xpnn.model.Model`) and optimizer held in an open xpnn file (`open_model_file`).

    Order: the architecture (bounded JSON), a size check before building, the build, then every weight's
    and optimizer array's declared shape and dtype against the built model, and only then the data.
    """
    file = f.filename
    try:
        return _read_model(f, file, cls or Model)
    except ModelFileError:
        raise
    except (KeyError, OSError, RuntimeError, UnicodeDecodeError) as exc:
        raise _damaged(file, exc) from None
    except (ValueError, TypeError) as exc:  # a layer config or weight that does not fit: say which file
        text = str(exc) if str(exc).startswith(file) else f"{file} holds a model xpnn cannot rebuild: {exc}"
        raise ModelFileError(text) from None


def _read_model(f: h5py.File, file: str, cls: type[Model]) -> tuple[Model, Optimizer | None]:
    contents = check_structure(f)
    dtype_name = f.attrs.get("dtype")
    if not isinstance(dtype_name, str) or len(dtype_name) > 16:
        raise ValueError(f"its dtype attribute must be a dtype name such as 'float32'; got {dtype_name!r:.40}.")
    input_shape = _input_shape(f.attrs["input_shape"], file)
    configs = parse_json_attr(f.attrs["layers"], f"{file}: layers", MAX_JSON_BYTES)
    layers = layers_from_configs(configs)
    model = cls(layers, dtype=dtype_name)  # checks the dtype name
    _check_layer_sizes(layers, input_shape)
    weights = _array_list(contents, "/weights")
    shapes = _dry_build(configs, input_shape, dtype_name, sum(ds.size for ds in weights))
    if shapes is not None:
        if len(weights) != len(shapes):
            raise ValueError(f"it holds {len(weights)} weight arrays but its architecture has {len(shapes)}.")
        _check_declared(weights, shapes)
    model.build(input_shape, rng=_NoDrawRng())
    for layer in model.layers:  # a float64 weight may still be the zero view itself: give it its own memory
        for table in (layer.params, layer.non_trainable):
            for key, arr in table.items():
                if isinstance(arr, np.ndarray) and not arr.flags.writeable:
                    table[key] = np.empty(arr.shape, arr.dtype)
    dtype = np.dtype(model.dtype)
    slots = [(layer, key) for layer in model.layers for key in layer.weights]
    if len(weights) != len(slots):
        raise ValueError(f"it holds {len(weights)} weight arrays but its architecture has {len(slots)}.")
    targets = [(f"{layer.name} {key}", tuple(layer.weights[key].shape)) for layer, key in slots]
    _check_declared(weights, targets, dtype)

    optimizer, scalars, lists = None, {}, {}
    if "/optimizer" in contents.groups:
        group = contents.groups["/optimizer"]
        optimizer = optimizer_from_config(parse_json_attr(group.attrs["config"], f"{file}: optimizer config"))
        for name in group.attrs:
            if name.startswith("state."):
                scalars[name[len("state.") :]] = parse_json_attr(group.attrs[name], f"{file}: optimizer {name}")
            elif name != "config":
                raise ValueError(f"the optimizer group has an unknown attribute {name!r:.40}.")
        params = [
            (f"{layer.name} {key} {{}}", tuple(p.shape)) for layer in model.layers for key, p in layer.params.items()
        ]
        for key in group.keys():
            arrays = _array_list(contents, f"/optimizer/{key}")
            if arrays and len(arrays) != len(params):  # empty: an optimizer that has not stepped yet
                raise ValueError(
                    f"its optimizer state {key!r:.40} has {len(arrays)} arrays but the model has {len(params)} "
                    "trainable weights."
                )
            _check_declared(arrays, [(what.format(key), shape) for what, shape in params], dtype)
            lists[key] = arrays

    for (layer, key), ds in zip(slots, weights):  # every size is known to fit: read
        _read_into(ds, layer.weights[key], f"{layer.name} {key}")
    if optimizer is not None:
        state: dict[str, Any] = dict(scalars)
        for key, arrays in lists.items():
            state[key] = [np.empty(ds.shape, dtype) for ds in arrays]
            for ds, target in zip(arrays, state[key]):
                _read_into(ds, target, f"optimizer {key}")
        if state:
            optimizer.set_state(state, model.parameters())
    return model, optimizer


def load_model(path: PathLike, cls: type[Model] | None = None) -> Model:
    """The model saved at `path` (a `cls`; `xpnn.load_model` gives an `xpnn.Sequential`), with its saved optimizer.

    TF/Keras counterpart: keras.saving.load_model for xpnn's files.
    """
    with open_model_file(path) as f:
        model, optimizer = read_model(f, cls)
    if optimizer is not None:
        model.optimizer = optimizer
    return model
