"""Checks at the model's boundary: turn user x/y into backend arrays, or say exactly what is wrong.

`prepare_x`/`prepare_y` are called on every fit/predict/evaluate. The other public functions are checks
the model calls at its own boundary: `input_shape_from(x, layers)` before it builds itself from the first x,
`check_weight_array` in set_weights, `check_seed` wherever a seed comes in, `check_output_finite` after
predict/evaluate. Keras's counterparts: `keras.src.trainers.data_adapters` (which refuses ragged lists) and
`Layer.set_weights` (which checks shapes only). Unlike Keras, xpnn scales uint8 images to [0, 1]; any other
integer type is passed on unscaled, as Keras passes everything, with a warning when it looks like pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from xpnn.backends import Backend
from xpnn.types import Array

# first layers that take NHWC images, so x must be (n, h, w, c)
IMAGE_LAYERS = frozenset(
    {"Conv2D", "MaxPool2D", "AvgPool2D", "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D", "DepthwiseConv2D"}
)
CHANNELS = (1, 3, 4)  # grey, RGB, RGBA: a last axis this size makes a rank-3 x look like one image


def _ragged(value: Any, what: str) -> ValueError | None:
    """A message for a list (or object array) of samples whose shapes differ, or None if it is not that."""
    is_objects = isinstance(value, np.ndarray) and value.dtype.kind == "O" and value.ndim == 1
    items = list(value) if isinstance(value, (list, tuple)) or is_objects else None
    if not items:
        return None
    shapes = []
    for item in items:
        try:
            shapes.append(np.shape(item))
        except ValueError:
            return ValueError(
                f"{what} is a nested list whose rows have different lengths; give every sample the same shape "
                f"and pass one array, e.g. np.stack({what})."
            )
    for i, shape in enumerate(shapes):
        if shape != shapes[0]:
            return ValueError(
                f"{what} is a list of {len(items)} samples of different shapes: item 0 has shape {shapes[0]} but "
                f"item {i} has {shape}. Give every sample the same shape (e.g. resize the images), then pass "
                f"np.stack({what})."
            )
    return None


def _as_array(value: Any, what: str, backend: Backend) -> Array:
    if backend.is_array(value) or isinstance(value, np.ndarray):
        if (ragged := _ragged(value, what)) is not None:  # an object array of samples of different shapes
            raise ragged
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        ragged = _ragged(value, what)
        if ragged is not None:
            raise ragged from None
        raise TypeError(f"{what} must be an array (NumPy or the backend's); got {type(value).__name__}.") from exc


FINITE_CHUNK = 1 << 18  # values per isfinite pass on the CPU: a 256 KiB mask that stays in cache


def _all_finite(arr: Array, backend: Backend) -> bool:
    """Whether `arr` holds no NaN or ±Inf, in one pass.

    On the CPU, `isfinite(...).all()` over cache-sized pieces (2.2 ms for 1024 SIGNS-sized images against
    3.5 ms for a min and a max, which carry any NaN or Inf); on CuPy, the min and max (two reductions).
    """
    xp = backend.xp
    if backend.name != "numpy":
        return bool(xp.isfinite(arr.min()) & xp.isfinite(arr.max()))
    rows = max(1, FINITE_CHUNK // max(1, arr[0].size))  # whole samples per piece: views, even of a strided array
    mask = np.empty((min(rows, len(arr)), *arr.shape[1:]), dtype=bool)
    for start in range(0, len(arr), rows):
        piece = arr[start : start + rows]
        if not np.isfinite(piece, out=mask[: len(piece)]).all():
            return False
    return True


def _require_finite(arr: Array, what: str, backend: Backend, source: Any = None) -> None:
    """Refuse NaN/Inf in `arr`; when `arr` is a cast of `source` that was finite there, say it overflowed."""
    xp = backend.xp
    if arr.size == 0 or _all_finite(arr, backend):
        return
    finite = backend.to_host(xp.isfinite(arr))
    if not bool(finite.all()):
        if source is not None:
            host = np.asarray(backend.to_host(source))
            overflow = ~finite & np.isfinite(host)
            if overflow.any():
                first = tuple(int(i) for i in np.argwhere(overflow)[0])
                dtype = np.dtype(arr.dtype)
                raise ValueError(
                    f"{what} holds {int(overflow.sum())} value(s) beyond {dtype}'s range (±{np.finfo(dtype).max:.3g}), "
                    f"the first {host[first]:.3g} at index {first}: they overflow to Inf in {dtype}. Scale {what} "
                    "(e.g. images to [0, 1]) or use a float64 model (dtype='float64')."
                )
        bad = int(finite.size - int(finite.sum()))
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f"{what} holds {bad} NaN or Inf value(s), the first at index {first}; "
            "remove or replace them (e.g. np.nan_to_num) before training."
        )


def _warn_unscaled_pixels(arr: Any, backend: Backend) -> None:
    """Integer images other than uint8 are not scaled; warn (once per process) when they look like pixels."""
    if arr.ndim != 4 or arr.shape[-1] not in CHANNELS or arr.size == 0:
        return
    high = int(backend.to_host(arr.max()))
    if high > 1:
        warnings.warn(
            f"x holds {arr.dtype} images with values up to {high}; only uint8 images are scaled to [0, 1] "
            "(Keras scales none). Scale them yourself (e.g. x / 255.0 or x / 65535.0), pass uint8, or pass "
            "x.astype('float32') if the values are meant as they are.",
            UserWarning,
            stacklevel=5,  # the user's predict/fit/evaluate call (warn -> prepare_x -> _prepare -> method)
        )


def prepare_x(x: Any, input_shape: tuple[int, ...], dtype: np.dtype, backend: Backend) -> Array:
    """x as a backend array of `dtype` shaped (n, *input_shape); uint8 images are scaled to [0, 1]."""
    arr = _as_array(x, "x", backend)
    kind = np.dtype(arr.dtype).kind
    if kind not in "biuf":
        raise TypeError(f"x must hold numbers; got dtype {arr.dtype}. Convert it, e.g. x.astype('float32').")
    if arr.ndim != len(input_shape) + 1 or tuple(arr.shape[1:]) != tuple(input_shape):
        one = " Use x[None] for one sample." if tuple(arr.shape) == tuple(input_shape) else ""
        raise ValueError(
            f"x has shape {tuple(arr.shape)} but the model takes (n, {', '.join(map(str, input_shape))})"
            f" (NHWC for images).{one}"
        )
    if len(arr) == 0:
        raise ValueError("x is empty (0 samples); pass at least one sample.")
    scale = arr.dtype == np.uint8
    if kind in "iu" and not scale:
        _warn_unscaled_pixels(arr, backend)
    source = arr
    with np.errstate(over="ignore"):  # a value beyond float32's range is reported below, as an overflow
        arr = backend.asarray(arr, dtype=dtype)
    if scale:
        arr = arr / 255.0
    elif kind == "f":
        narrowed = np.dtype(source.dtype).itemsize > np.dtype(dtype).itemsize
        _require_finite(arr, "x", backend, source if narrowed else None)
    return arr


def prepare_y(y: Any, n: int, classes: int, dtype: np.dtype, backend: Backend) -> Array:
    """y as (n, classes) backend rows of `dtype`: integer labels become one-hot, real rows are kept.

    For a one-unit output, y (n,) or (n, 1) holds the targets themselves (0/1 labels or regression values).
    """
    arr = _as_array(y, "y", backend)
    kind = np.dtype(arr.dtype).kind
    if kind not in "biuf":
        raise TypeError(f"y must hold numbers; got dtype {arr.dtype}.")
    if len(arr) != n:
        raise ValueError(f"x has {n} samples but y has {len(arr)}; pass one label (or label row) per sample.")
    if classes == 1 and arr.ndim == 1:  # one output unit (binary or regression): y holds the values, as in Keras
        arr = arr.reshape(-1, 1)
    if kind in "iu" and classes > 1 and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
        labels = backend.xp.asarray(arr).reshape(-1)
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= classes:
            raise ValueError(
                f"integer labels must be class indices in [0, {classes - 1}] for a {classes}-unit output; "
                f"got values from {low} to {high}."
            )
        return backend.xp.eye(classes, dtype=dtype)[labels]
    if kind in "f" and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1 and classes > 1)):
        host = np.asarray(backend.to_host(arr))
        whole = bool(np.all(np.isfinite(host) & (host == np.round(host))))
        fix = "use y.astype(int)" if whole else "they are not whole numbers, so pass the integer class of each sample"
        raise ValueError(
            f"y holds {arr.dtype} values of shape {tuple(arr.shape)}; class labels must be integers: {fix}, "
            f"or pass one-hot rows (n, {classes})."
        )
    if arr.ndim != 2 or arr.shape[1] != classes:
        raise ValueError(
            f"y has shape {tuple(arr.shape)}; pass integer class labels (n,) or label rows (n, {classes}) "
            f"to match the model's {classes} outputs."
        )
    with np.errstate(over="ignore"):
        out = backend.asarray(arr, dtype=dtype)
    narrowed = kind == "f" and np.dtype(arr.dtype).itemsize > np.dtype(dtype).itemsize
    _require_finite(out, "y", backend, arr if narrowed else None)
    return out


def input_shape_from(x: Any, layers: Sequence[Any]) -> tuple[int, ...]:
    """The per-sample shape an unbuilt model takes from its first `x`, refusing an x without a batch axis.

    A ragged list is named as such; one image (h, w, c) into a stack that starts with an image layer, or
    into one that starts with Flatten, would otherwise be taken as h samples of shape (w, c).
    """
    shape = getattr(x, "shape", None)
    if shape is None:
        try:
            shape = np.shape(x)
        except ValueError:
            ragged = _ragged(x, "x")
            raise (ragged or ValueError("x must be an array of samples (n, ...).")) from None
    shape = tuple(int(s) for s in shape)
    first = next(
        (type(layer).__name__ for layer in layers if type(layer).__name__ in IMAGE_LAYERS | {"Flatten", "Dense"}), ""
    )
    check_batch_axis(shape, first)
    return shape[1:]


def check_batch_axis(shape: Sequence[int], first_layer: str) -> None:
    """Refuse an x whose shape lacks the batch axis for a model whose first shaping layer is `first_layer`.

    `first_layer` is a layer class name: image layers (Conv2D, pools) need (n, h, w, c); Dense needs
    (n, features); Flatten takes any rank, so a rank-3 x ending in 1, 3 or 4 channels is refused as
    ambiguous (one image, or n samples of (w, c)?) until the model is built with an explicit input_shape.
    """
    shape = tuple(shape)
    where = f"x has shape {shape}"
    if len(shape) < 2 and first_layer:
        raise ValueError(f"{where}: one sample without its batch axis? Use x[None] (shape {(1, *shape)}).")
    if first_layer in IMAGE_LAYERS and len(shape) != 4:
        if len(shape) == 3:
            one = f"one image without its batch axis? Use x[None] (shape {(1, *shape)})"
            grey = f"a batch of grey images (n, h, w)? Add a channel axis: x[..., None] (shape {(*shape, 1)})"
            hints = (one, grey) if shape[-1] in CHANNELS else (grey, one)
            raise ValueError(f"{where} but {first_layer} takes NHWC images (n, h, w, c): {hints[0]}; {hints[1]}.")
        if len(shape) == 2:
            raise ValueError(
                f"{where} but {first_layer} takes NHWC images (n, h, w, c): one grey image? Use x[None, ..., None]."
            )
        raise ValueError(f"{where} but {first_layer} takes NHWC images (n, h, w, c).")
    if first_layer == "Flatten" and len(shape) == 3 and shape[-1] in CHANNELS:
        raise ValueError(
            f"{where}, like one image without its batch axis; the model is not built, so it would take "
            f"{shape[0]} samples of shape {shape[1:]}. Use x[None] for one image, or build the model first "
            f"(model.build(input_shape={shape[1:]})) if {shape[0]} samples of {shape[1:]} is what you mean."
        )


def check_weight_array(arr: Any, what: str) -> Any:
    """`arr` if it holds numbers (an array or anything np.asarray takes); else a TypeError naming `what`."""
    dtype = getattr(arr, "dtype", None)
    if dtype is None:
        try:
            arr = np.asarray(arr)
        except ValueError:
            raise ValueError(f"{what} is a ragged nested list; pass one array of the weight's shape.") from None
        dtype = arr.dtype
    if np.dtype(dtype).kind not in "iuf":
        raise TypeError(
            f"{what} must hold numbers; got dtype {dtype}. Pass float arrays, e.g. from model.get_weights() "
            "or tf.keras's model.get_weights()."
        )
    return arr


def check_count(name: str, value: Any, low: int = 1) -> int:
    """An integer argument (epochs, batch_size, ...) that must be >= `low`, as an int; else a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {name}={value}.")
    return int(value)


def check_seed(seed: Any, what: str = "seed") -> int | None:
    """A seed as numpy takes it: None (a fresh random start) or an integer >= 0 (0 included)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        hint = ""
        if isinstance(seed, str) and seed.strip().isdigit():
            hint = f" Write {what}={int(seed)} without quotes."
        elif isinstance(seed, float) and seed.is_integer() and seed >= 0:
            hint = f" Use {what}={int(seed)}."
        raise TypeError(f"{what} must be an integer >= 0 or None; got {seed!r} ({type(seed).__name__}).{hint}")
    if seed < 0:
        raise ValueError(f"{what} must be an integer >= 0 (numpy's seeds are non-negative) or None; got {seed}.")
    return int(seed)


def check_output_finite(out: Any, x: Any, what: str, backend: Backend) -> None:
    """After predict/evaluate on finite x: refuse NaN/Inf output as an overflow inside the model, not silence.

    `out` is the logits (or the cost); `x` the prepared input. The message gives the largest |x| and the fix.
    """
    xp = backend.xp
    if bool(xp.isfinite(out).all()):
        return
    finite = backend.to_host(xp.isfinite(out))
    rows = int((~finite.reshape(len(finite), -1).all(axis=1)).sum()) if finite.ndim else 1
    largest = float(backend.to_host(xp.abs(x).max())) if x.size else 0.0
    dtype = np.dtype(x.dtype)
    raise ValueError(
        f"{what} produced NaN or Inf ({rows} sample(s)) from finite inputs: the values overflowed {dtype} inside the "
        f"model (the largest |x| is {largest:.3g}; {dtype} holds up to {np.finfo(dtype).max:.3g}). Scale the inputs "
        "(e.g. images to [0, 1]) or use a float64 model (dtype='float64')."
    )
