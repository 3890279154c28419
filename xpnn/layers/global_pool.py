"""Global average and max pooling over the spatial axes of NHWC input, as keras.layers.Global*Pooling2D.

The max's gradient is TensorFlow's reduce_max gradient: shared equally among tied maxima, and NaN for
every cell of a channel whose maximum is NaN (the forward gives NaN there too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xpnn.backends import get_backend
from xpnn.layers.base import Layer, expect_nhwc
from xpnn.types import Array


@dataclass(frozen=True)
class GlobalPoolCache:
    x_shape: tuple[int, ...]
    share: Array | None = None  # max: each cell's share of its channel's gradient (1/ties at the maxima, else 0)


def global_avgpool_forward(x: Array) -> tuple[Array, GlobalPoolCache]:
    """(n, h, w, c) -> (n, c), the mean over h and w (tf.reduce_mean)."""
    return x.mean(axis=(1, 2)), GlobalPoolCache(x.shape)


def global_avgpool_backward(dout: Array, cache: GlobalPoolCache) -> Array:
    """dout / (h·w) on every cell."""
    xp = get_backend().xp
    n, h, w, c = cache.x_shape
    return xp.broadcast_to((dout / float(h * w))[:, None, None, :], cache.x_shape).copy()


def global_maxpool_forward(x: Array) -> tuple[Array, GlobalPoolCache]:
    """(n, h, w, c) -> (n, c), the max over h and w (tf.reduce_max: NaN wins)."""
    xp = get_backend().xp
    out = x.max(axis=(1, 2))
    hits = (x == out[:, None, None, :]).astype(x.dtype)
    with _quiet(xp):
        share = hits / hits.sum(axis=(1, 2), keepdims=True)  # 0/0 = NaN where the max is NaN, as TF's _MaxGrad
    return out, GlobalPoolCache(x.shape, share)


def global_maxpool_backward(dout: Array, cache: GlobalPoolCache) -> Array:
    """share · dout: TF's indicators / num_selected · grad."""
    return cache.share * dout[:, None, None, :]


def _quiet(xp: Any):
    """NumPy's errstate for 0/0 (CuPy does not warn)."""
    return xp.errstate(invalid="ignore") if hasattr(xp, "errstate") else _Null()


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _GlobalPool2D(Layer):
    def __init__(self, *, keepdims: bool = False) -> None:  # Keras: (data_format, keepdims)
        super().__init__()
        if not isinstance(keepdims, bool):
            raise TypeError(f"{self.name} expects keepdims=True or False; received keepdims={keepdims!r}.")
        self.keepdims = keepdims

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        _, _, c = expect_nhwc(input_shape, self.name)
        return (1, 1, c) if self.keepdims else (c,)

    def _out(self, out: Array) -> Array:
        return out[:, None, None, :] if self.keepdims else out

    def _dout(self, dout: Array) -> Array:
        return dout.reshape(dout.shape[0], dout.shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {"keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPool2D):
    """GlobalAveragePooling2D(keepdims=False): (n, h, w, c) -> (n, c) means.

    TF/Keras counterpart: keras.layers.GlobalAveragePooling2D.
    """

    def forward(self, x: Array) -> tuple[Array, GlobalPoolCache]:
        out, cache = global_avgpool_forward(x)
        return self._out(out), cache

    def backward(self, dout: Array, cache: GlobalPoolCache, need_dx: bool = True) -> tuple[Array | None, dict]:
        return (global_avgpool_backward(self._dout(dout), cache) if need_dx else None), {}


class GlobalMaxPooling2D(_GlobalPool2D):
    """GlobalMaxPooling2D(keepdims=False): (n, h, w, c) -> (n, c) maxima.

    TF/Keras counterpart: keras.layers.GlobalMaxPooling2D.
    """

    def forward(self, x: Array) -> tuple[Array, GlobalPoolCache]:
        out, cache = global_maxpool_forward(x)
        return self._out(out), cache

    def backward(self, dout: Array, cache: GlobalPoolCache, need_dx: bool = True) -> tuple[Array | None, dict]:
        return (global_maxpool_backward(self._dout(dout), cache) if need_dx else None), {}
