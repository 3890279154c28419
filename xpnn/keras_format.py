"""The Keras file formats without TensorFlow: Keras 3 `.keras` archives and legacy `.h5` (public face: xpnn.keras).

`load_model(path)` reads a Sequential model saved by Keras (`model.save("m.keras")` or `"m.h5"`) into an xpnn
model with the same predictions; `save_keras(model, path)` writes a `.keras` archive that
`keras.models.load_model` reads. Only h5py and the standard library are used.

The `.keras` format (keras/src/saving/saving_lib.py): a zip of `config.json` (the model serialized as
`{"module", "class_name", "config", "registered_name", "build_config"}`, a Sequential's layers in
`config["layers"]`, an InputLayer first), `metadata.json` (`keras_version`, `date_saved`) and
`model.weights.h5`, where the k-th layer of a class keeps its variables (trainable, then non-trainable) as
datasets `layers/<snake_case(class)>[_k]/vars/0, 1, ...`. The legacy `.h5` format (keras/src/legacy/saving)
keeps the config in the `model_config` attribute and each layer's weights in `model_weights/<layer name>`,
listed by its `weight_names` attribute.

The mapping is a table keyed by Keras class name. An entry is used only when `xpnn.layers` has its class,
so layers added to xpnn later are read and written as soon as they exist. Every Keras option either maps to an
xpnn constructor argument, has its no-op value, or is reported: one error lists every unknown layer and
unsupported option of a file. Files from others are untrusted: zip member names and sizes are checked before
anything is read, HDF5 links, virtual datasets and external storage are refused (`xpnn.h5check`), weight shapes
are checked against the architecture before reading, and nothing is ever unpickled.
"""

from __future__ import annotations

import datetime
import difflib
import inspect
import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import h5py
import numpy as np

from xpnn import layers as xpnn_layers
from xpnn import model as model_module
from xpnn.h5check import check_structure
from xpnn.io import atomic_write
from xpnn.layers.base import Layer

PathLike = str | os.PathLike
Sequential = Any  # xpnn.model's model class (Sequential on this branch, Model after the floors split)


def default_model_class() -> type:
    """The class load_model builds when given none: xpnn.model's Sequential (or its Model)."""
    return getattr(model_module, "Sequential", None) or model_module.Model


MAX_CONFIG_BYTES = 16 << 20  # config.json, and a legacy file's model_config attribute
MAX_ARCHIVE_BYTES = 4 << 30  # all members of a .keras archive, uncompressed
ARCHIVE_MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
KERAS_VERSION = "3.15.1"  # written into metadata.json (the Keras this writer was checked against)
DTYPES = ("float32", "float64")

# Keras config keys that say nothing about the math of a loaded model.
IGNORED = {
    "name",
    "dtype",
    "kernel_initializer",
    "bias_initializer",
    "depthwise_initializer",
    "pointwise_initializer",
    "beta_initializer",
    "gamma_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
    "batch_input_shape",
    "batch_size",
}
NO_ACTIVATION = ("linear", None)
# Activation names with their own xpnn layer (xpnn.layers.Activation, where present, takes any other name).
ACTIVATION_LAYERS = {"relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh", "softmax": "Softmax"}
LAST_AXIS = (-1, (-1,))


@dataclass(frozen=True)
class KerasLayer:
    """How one Keras layer class maps onto xpnn: the xpnn class, the Keras keys passed on, and no-op values.

    `args` are Keras config keys handed to the xpnn constructor under the same name when it accepts them.
    `neutral` are keys whose listed value does nothing; a key xpnn does not accept must hold that value.
    Keys in neither, and not in IGNORED, must be None or False (an option left off), or they are reported.
    """

    xpnn: str
    args: tuple[str, ...] = ()
    neutral: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    activation: bool = False  # has Keras's `activation=` option
    ignore: tuple[str, ...] = ()  # keys without effect here (e.g. renorm_momentum when renorm is off)
    renames: dict[str, str] = field(default_factory=dict)  # Keras 2 names of Keras 3 keys


CHANNELS_LAST = {"data_format": ("channels_last", None), "trainable": (True,)}
CONV = {**CHANNELS_LAST, "dilation_rate": (1, (1, 1)), "groups": (1,), "use_bias": (True,)}

# Keras class name -> mapping. Entries whose xpnn class does not exist yet are skipped (reported as unknown).
KERAS_LAYERS: dict[str, KerasLayer] = {
    "Conv2D": KerasLayer(
        "Conv2D", ("filters", "kernel_size", "strides", "padding", "use_bias", "dilation_rate", "groups"), CONV, True
    ),
    "Dense": KerasLayer("Dense", ("units", "use_bias"), {"trainable": (True,), "use_bias": (True,)}, True),
    "MaxPooling2D": KerasLayer("MaxPool2D", ("pool_size", "strides", "padding"), CHANNELS_LAST),
    "AveragePooling2D": KerasLayer("AvgPool2D", ("pool_size", "strides", "padding"), CHANNELS_LAST),
    "Flatten": KerasLayer("Flatten", (), CHANNELS_LAST),
    "ReLU": KerasLayer(
        "ReLU",
        ("max_value", "negative_slope", "threshold"),
        {"max_value": (None,), "negative_slope": (0, 0.0), "threshold": (0, 0.0), "trainable": (True,)},
    ),
    "Softmax": KerasLayer("Softmax", ("axis",), {"axis": LAST_AXIS, "trainable": (True,)}),
    # Layers another branch adds to xpnn.layers; used once the class exists there.
    "Dropout": KerasLayer("Dropout", ("rate", "seed"), {"noise_shape": (None,), "trainable": (True,)}),
    "BatchNormalization": KerasLayer(
        "BatchNormalization",
        ("axis", "momentum", "epsilon", "center", "scale"),
        {
            "axis": LAST_AXIS,
            "center": (True,),
            "scale": (True,),
            "trainable": (True,),
            "synchronized": (False,),
            "renorm": (False,),
        },
        ignore=("renorm_momentum", "renorm_clipping"),
    ),
    "GlobalAveragePooling2D": KerasLayer(
        "GlobalAveragePooling2D", ("keepdims",), {**CHANNELS_LAST, "keepdims": (False,)}
    ),
    "GlobalMaxPooling2D": KerasLayer("GlobalMaxPooling2D", ("keepdims",), {**CHANNELS_LAST, "keepdims": (False,)}),
    "ZeroPadding2D": KerasLayer("ZeroPadding2D", ("padding",), CHANNELS_LAST),
    "Reshape": KerasLayer("Reshape", ("target_shape",), {"trainable": (True,)}),
    "LeakyReLU": KerasLayer(
        "LeakyReLU", ("negative_slope",), {"trainable": (True,)}, renames={"alpha": "negative_slope"}
    ),
    "ELU": KerasLayer("ELU", ("alpha",), {"trainable": (True,)}),
    "DepthwiseConv2D": KerasLayer(
        "DepthwiseConv2D",
        ("kernel_size", "strides", "padding", "depth_multiplier", "dilation_rate", "use_bias"),
        CONV,
        True,
    ),
    "SeparableConv2D": KerasLayer(
        "SeparableConv2D",
        ("filters", "kernel_size", "strides", "padding", "depth_multiplier", "dilation_rate", "use_bias"),
        CONV,
        True,
    ),
}
KERAS_ALIASES = {"MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D"}

# xpnn class name -> (Keras class name, fixed Keras config, xpnn config keys Keras takes under the same name).
XPNN_TO_KERAS: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "Conv2D": ("Conv2D", {}, KERAS_LAYERS["Conv2D"].args + ("activation", "kernel_initializer")),
    "Dense": ("Dense", {}, KERAS_LAYERS["Dense"].args + ("activation", "kernel_initializer")),
    "MaxPool2D": ("MaxPooling2D", {}, KERAS_LAYERS["MaxPooling2D"].args),
    "AvgPool2D": ("AveragePooling2D", {}, KERAS_LAYERS["AveragePooling2D"].args),
    "Flatten": ("Flatten", {}, ()),
    "ReLU": ("ReLU", {}, ()),
    "Sigmoid": ("Activation", {"activation": "sigmoid"}, ()),
    "Tanh": ("Activation", {"activation": "tanh"}, ()),
    "Softmax": ("Softmax", {"axis": -1}, ()),
    "Activation": ("Activation", {}, ("activation",)),
    **{
        name: (name, {}, KERAS_LAYERS[name].args + (("activation",) if KERAS_LAYERS[name].activation else ()))
        for name in (
            "Dropout",
            "BatchNormalization",
            "GlobalAveragePooling2D",
            "GlobalMaxPooling2D",
            "ZeroPadding2D",
            "Reshape",
            "LeakyReLU",
            "ELU",
            "DepthwiseConv2D",
            "SeparableConv2D",
        )
    },
}
KERAS_INITIALIZERS = {"glorot_uniform", "glorot_normal", "he_normal", "he_uniform", "lecun_normal", "zeros", "ones"}


def to_snake_case(name: str) -> str:
    """Keras's keras.src.utils.naming.to_snake_case: "MaxPooling2D" -> "max_pooling2d"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique(name: str, used: dict[str, int]) -> str:
    """Keras's _get_unique_name: the first "conv2d", then "conv2d_1", "conv2d_2", ..."""
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _plain(value: Any) -> Any:
    """JSON lists as tuples, so [1, 1] compares equal to (1, 1)."""
    return tuple(_plain(v) for v in value) if isinstance(value, list) else value


# ---- reading: the archive and the legacy file ---------------------------------------------------------
def _unsafe_member(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return name.startswith("/") or "\\" in name or ":" in name or ".." in parts or not parts


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytes:
    """A member's bytes, read no further than its declared size (a lying header cannot make us read more)."""
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise ValueError(f"{where}: member {info.filename} holds more or fewer bytes than its header declares.")
    return data


def read_archive(path: PathLike) -> tuple[dict[str, Any], bytes]:
    """(config, weights .h5 bytes) of a .keras archive, after checking its member names and sizes."""
    file = Path(path)
    try:
        zf = zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ValueError(
            f"{file} is not a Keras .keras archive (not a readable zip file: {exc}); "
            "save it with Keras 3's model.save('model.keras'), or pass a legacy .h5 model file."
        ) from None
    with zf:
        infos = zf.infolist()
        problems = []
        names = [i.filename for i in infos]
        for info in infos:
            if _unsafe_member(info.filename):
                problems.append(f"unsafe member name {info.filename!r}")
            elif info.filename not in ARCHIVE_MEMBERS and not (info.is_dir() and info.filename.startswith("assets")):
                problems.append(f"unexpected member {info.filename!r} (assets and npz weights are not read)")
        problems += [f"duplicate member {n!r}" for n in sorted(set(names)) if names.count(n) > 1]
        for needed in ("config.json", "model.weights.h5"):
            if needed not in names:
                problems.append(f"no {needed}")
        total = sum(i.file_size for i in infos)
        if total > MAX_ARCHIVE_BYTES:
            problems.append(f"its members declare {total} bytes uncompressed, above the {MAX_ARCHIVE_BYTES} limit")
        if problems:
            raise ValueError(f"{file} is not a .keras archive xpnn reads: " + "; ".join(problems) + ".")
        by_name = {i.filename: i for i in infos}
        config_info = by_name["config.json"]
        if config_info.file_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{file}: config.json declares {config_info.file_size} bytes, above {MAX_CONFIG_BYTES}.")
        try:
            config = json.loads(_read_member(zf, config_info, str(file)))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file}: config.json is not valid JSON ({exc}).") from None
        weights = _read_member(zf, by_name["model.weights.h5"], str(file))
    if not isinstance(config, dict):
        raise ValueError(f"{file}: config.json must hold a serialized Keras model (a JSON object).")
    return config, weights


@dataclass
class Plan:
    """A Keras Sequential model translated: xpnn layers, which of them receives each Keras layer's weights."""

    layers: list[Layer]
    owners: list[tuple[str, dict[str, Any], int | None]]  # (keras class, keras config, index into layers or None)
    input_shape: tuple[int, ...]
    dtype: str


def _dtype_name(spec: Any) -> str | None:
    """'float32' from "float32" or a DTypePolicy {"class_name": "DTypePolicy", "config": {"name": "float32"}}."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return _dtype_name(spec.get("config", {}).get("name"))
    return None


def _activation_name(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("config"), str):  # {"class_name": "function", "config": "relu"}
        return value["config"]
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        return value["class_name"].lower()
    return repr(value)


def _show(value: Any) -> str:
    """A config value for an error: a serialized Keras object by its class and config, others by repr."""
    if isinstance(value, dict) and "class_name" in value:
        return f"{value['class_name']}({value.get('config') or ''})"
    return repr(value)


def _xpnn_class(name: str) -> type | None:
    cls = getattr(xpnn_layers, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, Layer) else None


def _accepts(cls: type, key: str) -> bool:
    return key in inspect.signature(cls).parameters


def _activation_layer(name: str) -> Layer:
    """An xpnn layer for a Keras activation name: ReLU/Sigmoid/Tanh/Softmax, or xpnn's Activation(name)."""
    cls = _xpnn_class(ACTIVATION_LAYERS.get(name, ""))
    if cls is not None:
        return cls()
    generic = _xpnn_class("Activation")
    if generic is None:
        raise ValueError(f"activation {name!r} has no xpnn layer")
    return generic(name)


def _translate(class_name: str, config: dict[str, Any]) -> list[Layer]:
    """The xpnn layer(s) for one Keras layer; a ValueError listing every option that cannot be honoured."""
    class_name = KERAS_ALIASES.get(class_name, class_name)
    if class_name == "Activation":
        extra = sorted(
            k for k in config if k not in IGNORED | {"activation", "trainable"} and config[k] not in (None, False)
        )
        if extra or config.get("trainable", True) is not True:
            raise ValueError(f"options {extra or ['trainable=False']} are not supported")
        name = _activation_name(config.get("activation"))
        return [] if name in NO_ACTIVATION else [_activation_layer(str(name))]
    spec = KERAS_LAYERS.get(class_name)
    cls = _xpnn_class(spec.xpnn) if spec else None
    if spec is None or cls is None:
        raise LookupError(class_name)
    kwargs: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in config.items():
        key, value = spec.renames.get(key, key), _plain(value)
        if key in IGNORED or key in spec.ignore or (key == "activation" and spec.activation):
            continue
        neutral = spec.neutral.get(key)
        if key in spec.args and _accepts(cls, key):
            if neutral is None or value not in neutral:
                kwargs[key] = value
        elif neutral is not None:
            if value not in neutral:
                problems.append(f"{key}={_show(value)}")
        elif value is not None and (key in spec.args or value is not False):
            problems.append(f"{key}={_show(value)}")  # else an option left off (kernel_constraint=None, lora_rank=None)
    after: list[Layer] = []
    if spec.activation:
        name = _activation_name(config.get("activation"))
        if name not in NO_ACTIVATION:
            if _accepts(cls, "activation"):
                kwargs["activation"] = name
            else:
                try:
                    after.append(_activation_layer(str(name)))
                except ValueError:
                    problems.append(f"activation={name!r}")
    if problems:
        raise ValueError(f"options {', '.join(problems)} are not supported")
    return [cls(**kwargs), *after]


def plan_from_config(config: dict[str, Any]) -> Plan:
    """Translate a serialized Keras Sequential model (config.json or model_config) into xpnn layers.

    Raises one ValueError that lists every unknown layer and unsupported option.
    """
    if config.get("class_name") != "Sequential":
        raise ValueError(
            f"the file holds a Keras {config.get('class_name')!r} model; xpnn reads Sequential models only "
            "(a functional or subclassed model cannot be read; rebuild it as keras.Sequential)."
        )
    body = config.get("config", {})
    entries = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the Sequential config has no list of layers.")
    input_shape = None
    for source in (body.get("build_input_shape"), (config.get("build_config") or {}).get("input_shape")):
        if isinstance(source, list) and len(source) > 1:
            input_shape = source[1:]
    layers: list[Layer] = []
    owners: list[tuple[str, dict[str, Any], int | None]] = []
    problems: list[str] = []
    dtypes: set[str] = set()
    unknown = False
    for i, entry in enumerate(entries):
        class_name = str(entry.get("class_name")) if isinstance(entry, dict) else repr(entry)
        class_name = KERAS_ALIASES.get(class_name, class_name)  # the class Keras builds names its weights' group
        cfg = entry.get("config", {}) if isinstance(entry, dict) else {}
        if not isinstance(cfg, dict):
            problems.append(f"layer {i} ({class_name}): config is not a JSON object")
            continue
        dtype = _dtype_name(cfg.get("dtype"))
        if dtype is not None:
            dtypes.add(dtype)
        for key in ("batch_shape", "batch_input_shape"):
            if isinstance(cfg.get(key), list):
                input_shape = cfg[key][1:]
        if class_name == "InputLayer":
            if cfg.get("sparse") or cfg.get("ragged"):
                problems.append(f"layer {i} (InputLayer): sparse or ragged input is not supported")
            continue
        label = f"layer {i} ({class_name} {cfg.get('name', '')!r})"
        try:
            made = _translate(class_name, cfg)
        except LookupError:
            close = difflib.get_close_matches(class_name, list(KERAS_LAYERS), n=1)
            problems.append(f"{label}: unknown layer" + (f" (did you mean {close[0]}?)" if close else ""))
            unknown = True
            continue
        except (ValueError, TypeError) as exc:
            problems.append(f"{label}: {exc}")
            continue
        owners.append((class_name, cfg, len(layers) if made else None))
        layers.extend(made)
    bad_dtypes = sorted(d for d in dtypes if d not in DTYPES)
    if bad_dtypes:
        problems.append(f"dtype policies {bad_dtypes}: xpnn computes in float32 or float64 only")
    elif len(dtypes) > 1:
        problems.append(f"mixed dtypes {sorted(dtypes)}: xpnn models use one dtype throughout")
    if input_shape is None:
        problems.append("no input shape (the model was saved before it was built; give it a keras.Input)")
    if unknown:
        known = sorted(k for k, v in KERAS_LAYERS.items() if _xpnn_class(v.xpnn)) + ["Activation", "InputLayer"]
        problems.append(f"(the Keras layers xpnn reads: {', '.join(sorted(known))})")
    if problems:
        raise ValueError("the Keras model uses what xpnn cannot read:\n  " + "\n  ".join(problems))
    if not layers:
        raise ValueError("the Keras model has no layers xpnn computes (only inputs and linear activations).")
    shape = tuple(int(s) for s in input_shape)  # type: ignore[union-attr]
    return Plan(layers, owners, shape, dtypes.pop() if dtypes else "float32")


def _assemble(plan: Plan, cls: type | None, dtype: str | None, read_layer: Any, where: str) -> Sequential:
    """Build the model and set each Keras layer's weights on its xpnn owner (shapes checked before reading)."""
    model = (cls or default_model_class())(plan.layers, dtype=dtype or plan.dtype)
    try:
        model.build(plan.input_shape, seed=0)
    except ValueError as exc:
        raise ValueError(f"{where}: the translated model does not build: {exc}") from None
    weights: list[np.ndarray] = []
    used: dict[str, int] = {}
    for class_name, cfg, owner in plan.owners:
        expected = [] if owner is None else [tuple(w.shape) for w in plan.layers[owner].weights.values()]
        arrays = read_layer(class_name, cfg, _unique(to_snake_case(class_name), used), expected)
        weights.extend(arrays)
    model.set_weights(weights)
    return model


def read_dataset(ds: h5py.Dataset, shape: tuple[int, ...], what: str) -> np.ndarray:
    """The dataset's values after checking that its declared shape is `shape` (nothing is read before)."""
    if tuple(ds.shape) != tuple(shape):
        raise ValueError(f"{what} has shape {tuple(ds.shape)} in the file; the architecture needs {tuple(shape)}.")
    return np.asarray(ds[()])


def _read_vars(group: Any, expected: list[tuple[int, ...]], what: str) -> list[np.ndarray]:
    keys = sorted(group.keys(), key=lambda k: int(k) if str(k).isdigit() else -1) if group is not None else []
    if keys != [str(i) for i in range(len(expected))]:
        raise ValueError(f"{what} holds variables {keys}; the architecture needs {len(expected)} ('0'..).")
    return [read_dataset(group[str(i)], shape, f"{what}/{i}") for i, shape in enumerate(expected)]


def _load_keras_archive(path: Path, cls: type | None, dtype: str | None) -> Sequential:
    config, weights = read_archive(path)
    plan = plan_from_config(config)
    try:
        f = h5py.File(io.BytesIO(weights), "r")
    except OSError as exc:
        raise ValueError(f"{path}: model.weights.h5 is not a readable HDF5 file ({exc}).") from None
    with f:
        check_structure(f, f"{path} (model.weights.h5)")

        def read_layer(class_name: str, cfg: dict, snake: str, expected: list) -> list[np.ndarray]:
            node = f.get(f"layers/{snake}/vars")
            if node is None and not expected:
                return []
            if not isinstance(node, h5py.Group):
                raise ValueError(f"{path}: model.weights.h5 has no layers/{snake}/vars for {class_name}.")
            return _read_vars(node, expected, f"{path}: layers/{snake}/vars")

        return _assemble(plan, cls, dtype, read_layer, str(path))


def _text_attr(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_legacy_h5(path: Path, cls: type | None, dtype: str | None) -> Sequential:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file ({exc}).") from None
    with f:
        if "model_config" not in f.attrs:
            raise ValueError(
                f"{path} is an HDF5 file but not a Keras model file (no model_config attribute); "
                "an xpnn model file loads with xpnn.load_model, Keras weights-only files are not read."
            )
        text = _text_attr(f.attrs["model_config"])
        if len(text) > MAX_CONFIG_BYTES:
            raise ValueError(f"{path}: model_config holds {len(text)} bytes, above {MAX_CONFIG_BYTES}.")
        check_structure(f, str(path))
        plan = plan_from_config(json.loads(text))
        root = f.get("model_weights", f)

        def read_layer(class_name: str, cfg: dict, snake: str, expected: list) -> list[np.ndarray]:
            group = root.get(str(cfg.get("name")))
            if group is None:
                if expected:
                    raise ValueError(f"{path}: no weights for layer {cfg.get('name')!r} ({class_name}).")
                return []
            names = [_text_attr(n) for n in group.attrs.get("weight_names", [])]
            if len(names) != len(expected):
                raise ValueError(
                    f"{path}: layer {cfg.get('name')!r} lists {len(names)} weights; the architecture needs "
                    f"{len(expected)}."
                )
            out = []
            for name, shape in zip(names, expected):
                ds = group.get(name)
                if not isinstance(ds, h5py.Dataset):
                    raise ValueError(f"{path}: weight {name!r} of layer {cfg.get('name')!r} is missing.")
                out.append(read_dataset(ds, shape, f"{path}: {group.name}/{name}"))
            return out

        return _assemble(plan, cls, dtype, read_layer, str(path))


def is_keras_file(path: PathLike) -> bool:
    """Whether `path` is a Keras model file: a zip (`.keras`) or an HDF5 file with Keras's `model_config`."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
        if head[:2] == b"PK":
            return True
        if head != b"\x89HDF\r\n\x1a\n":
            return False
        with h5py.File(path, "r") as f:
            return "model_config" in f.attrs and "format" not in f.attrs
    except OSError:
        return False


def load_model(path: PathLike, cls: type | None = None, dtype: str | None = None) -> Sequential:
    """A Keras Sequential model from a `.keras` archive or a legacy `.h5` file, as an xpnn model with its weights.

    `cls` is the model class to build (default: xpnn's Sequential); `dtype` overrides the file's
    ("float32"/"float64"). Keras counterpart: `keras.models.load_model(path)`; no TensorFlow is needed.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"Keras model file {file} does not exist; check the path.")
    if file.is_dir():
        raise ValueError(f"{file} is a folder; pass a .keras archive or a legacy Keras .h5 file.")
    with open(file, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK"):
        return _load_keras_archive(file, cls, dtype)
    if head == b"\x89HDF\r\n\x1a\n":
        return _load_legacy_h5(file, cls, dtype)
    raise ValueError(f"{file} is neither a .keras archive (zip) nor a Keras .h5 file (HDF5).")


# ---- writing ------------------------------------------------------------------------------------------
def _serialized(class_name: str, config: dict[str, Any], module: str = "keras.layers") -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def keras_layer_config(layer: Layer, name: str, dtype: str) -> tuple[str, dict[str, Any]]:
    """(Keras class name, Keras config) for a built xpnn layer; a ValueError when Keras has no counterpart."""
    entry = XPNN_TO_KERAS.get(type(layer).__name__)
    if entry is None:
        raise ValueError(f"{type(layer).__name__} has no Keras counterpart in xpnn.keras")
    keras_class, fixed, keys = entry
    config: dict[str, Any] = {"name": name, "trainable": True, "dtype": dtype, **fixed}
    dropped = []
    for key, value in layer.get_config().items():
        if key == "kernel_initializer":
            if value in KERAS_INITIALIZERS:
                config[key] = value
        elif key in keys:
            config[key] = list(value) if isinstance(value, tuple) else value
        elif value not in (None, False):
            dropped.append(f"{key}={value!r}")
    if dropped:
        raise ValueError(f"{type(layer).__name__} options {', '.join(dropped)} have no Keras counterpart")
    return keras_class, config


def keras_config(model: Sequential) -> dict[str, Any]:
    """The model serialized as Keras 3's config.json (a Sequential with an InputLayer first)."""
    model._require_built()
    dtype = str(model.dtype)
    batch_shape = [None, *model.input_shape]
    entries = [
        _serialized("InputLayer", {"batch_shape": batch_shape, "dtype": dtype, "sparse": False, "name": "input_layer"})
    ]
    used: dict[str, int] = {}
    problems = []
    for i, layer in enumerate(model.layers):
        entry = XPNN_TO_KERAS.get(type(layer).__name__)
        try:
            name = _unique(to_snake_case(entry[0]), used) if entry else ""
            class_name, config = keras_layer_config(layer, name, dtype)
        except ValueError as exc:
            problems.append(f"layer {i}: {exc}")
            continue
        entry = _serialized(class_name, config)
        entry["build_config"] = {"input_shape": [None, *layer.input_shape]}
        entries.append(entry)
    if problems:
        raise ValueError("the model cannot be written as a Keras model:\n  " + "\n  ".join(problems))
    body = {
        "name": "sequential",
        "trainable": True,
        "dtype": dtype,
        "layers": entries,
        "build_input_shape": batch_shape,
    }
    out = _serialized("Sequential", body, module="keras")
    out["build_config"] = {"input_shape": batch_shape}
    return out


def keras_weights_h5(model: Sequential) -> bytes:
    """model.weights.h5 as Keras 3 lays it out: layers/<snake class>[_k]/vars/<i>, a top-level vars group."""
    buffer = io.BytesIO()
    used: dict[str, int] = {}
    with h5py.File(buffer, "w") as f:
        f.create_group("vars").attrs["name"] = "sequential"
        f.create_group("layers")
        for layer, w in zip(model.layers, _layer_weights(model)):
            snake = _unique(to_snake_case(XPNN_TO_KERAS[type(layer).__name__][0]), used)
            group = f.create_group(f"layers/{snake}/vars")
            group.attrs["name"] = snake
            for i, arr in enumerate(w):
                group.create_dataset(str(i), data=arr)
    return buffer.getvalue()


def _layer_weights(model: Sequential) -> list[list[np.ndarray]]:
    flat = iter(model.get_weights())
    return [[next(flat) for _ in layer.weights] for layer in model.layers]


def save_keras(model: Sequential, path: PathLike) -> Path:
    """Write `model` as a Keras 3 `.keras` archive (atomically) that `keras.models.load_model` reads.

    Architecture and weights only (no optimizer): Keras predicts what xpnn predicts, to float rounding.
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a folder; pass a file name ending in .keras (e.g. {target / 'model.keras'}).")
    if target.suffix != ".keras":
        raise ValueError(f"Keras archives must end in .keras (Keras refuses others); got {target.name!r}.")
    config = json.dumps(keras_config(model))
    weights = keras_weights_h5(model)
    metadata = json.dumps(
        {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    )

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, data in (("metadata.json", metadata.encode()), ("config.json", config.encode())):
                zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
            zf.writestr("model.weights.h5", weights)

    return atomic_write(target, write)
