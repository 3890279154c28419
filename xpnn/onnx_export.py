"""ONNX export of a built model: `export_onnx(model, "model.onnx")` (needs the `onnx` extra).

The graph takes the model's own NHWC input ("input", shape (batch, h, w, c), the model's dtype) and returns its
output ("output"). ONNX convolutions and pools are NCHW, so the graph transposes into NCHW before the first of
them and back only where NHWC order matters (Flatten, Reshape, Dense, the output). TensorFlow's SAME padding,
with its odd pixel bottom/right, becomes explicit `pads`; ONNX MaxPool never lets a padded cell win and
AveragePool with count_include_pad=0 divides by the real cells, as TF's pools do. Each xpnn layer class maps
to ONNX nodes through a table keyed by class name; layers added to xpnn later (BatchNormalization, depthwise
convs, ...) have their entries ready. Counterpart: tf2onnx / `keras.Model.export(format="onnx")`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xpnn.io import atomic_write
from xpnn.layers.base import Layer
from xpnn.layers.padding import normalize_padding, pads_1d

Sequential = Any  # a built xpnn model (xpnn.model's Sequential or Model)

DEFAULT_OPSET = 17
TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "ONNX export needs the onnx package: pip install 'xpnn[onnx]' (or pip install onnx)."
        ) from None
    return onnx


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else (int(value[0]), int(value[1]))


class Graph:
    """Nodes and initializers being built, with the current tensor's name and layout (NHWC, NCHW or flat)."""

    def __init__(self, onnx: Any, dtype: np.dtype) -> None:
        self.onnx, self.dtype = onnx, dtype
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.current, self.layout = "input", "NHWC"
        self._count = 0

    def name(self, base: str) -> str:
        """A fresh node name from `base`."""
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, base: str, value: Any, dtype: Any = None) -> str:
        """Add `value` as an initializer (in the graph's dtype unless `dtype`); returns its name."""
        name = self.name(base)
        arr = np.asarray(value, dtype=dtype or self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        """Append `op` on `inputs`; its output becomes the current tensor."""
        out = self.name(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        self.current = out
        return out

    def apply(self, op: str, **attrs: Any) -> str:
        """Add node `op` on the current value; returns (and makes current) its output."""
        return self.node(op, [self.current], **attrs)

    def nchw(self) -> None:
        """Transpose the current value to NCHW if it is NHWC (ONNX's conv and pool layout)."""
        if self.layout == "NHWC":
            self.apply("Transpose", perm=TO_NCHW)
            self.layout = "NCHW"

    def nhwc(self) -> None:
        """Transpose the current value back to NHWC if it is NCHW."""
        if self.layout == "NCHW":
            self.apply("Transpose", perm=TO_NHWC)
            self.layout = "NHWC"


def _spatial_pads(layer: Layer, kernel: tuple[int, int], strides: tuple[int, int], dilation=(1, 1)) -> list[int]:
    """ONNX pads [top, left, bottom, right] for TF's VALID/SAME on the layer's input (odd pixel bottom/right)."""
    padding = normalize_padding(layer.get_config().get("padding", "valid"))
    h, w = layer.input_shape[0], layer.input_shape[1]
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    (top, bottom), (left, right) = (pads_1d(h, eff[0], strides[0], padding), pads_1d(w, eff[1], strides[1], padding))
    return [top, left, bottom, right]


def _weights(layer: Layer) -> list[np.ndarray]:
    from xpnn.backends import get_backend

    return [np.asarray(get_backend().to_host(w)) for w in layer.weights.values()]


def _activation(g: Graph, name: Any) -> None:
    """Nodes for a Keras activation name (as Conv2D/Dense(activation=...) or Activation(name) use)."""
    name = None if name is None else str(getattr(name, "name", name)).lower()
    if name in (None, "linear"):
        return
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus", "softsign": "Softsign"}
    if name in simple:
        g.apply(simple[name])
    elif name == "softmax":
        g.apply("Softmax", axis=1 if g.layout == "NCHW" else -1)
    elif name == "elu":
        g.apply("Elu", alpha=1.0)
    elif name == "selu":
        g.apply("Selu")
    elif name == "leaky_relu":
        g.apply("LeakyRelu", alpha=0.2)  # keras.activations.leaky_relu's default negative_slope
    elif name == "relu6":
        g.node("Clip", [g.current, g.const("zero", 0.0), g.const("six", 6.0)])
    elif name in ("swish", "silu"):
        x = g.current
        g.node("Mul", [x, g.apply("Sigmoid")])
    elif name == "exponential":
        g.apply("Exp")
    else:
        raise ValueError(f"activation {name!r} has no ONNX mapping in xpnn.onnx_export")


def _conv(g: Graph, layer: Layer) -> None:
    cfg = layer.get_config()
    w, *b = _weights(layer)
    kernel, strides = _pair(cfg["kernel_size"]), _pair(cfg.get("strides", 1))
    dilation, groups = _pair(cfg.get("dilation_rate", 1)), int(cfg.get("groups", 1))
    g.nchw()
    inputs = [g.current, g.const("kernel", w.transpose(3, 2, 0, 1))]  # (fh, fw, cin/groups, cout) -> (cout, ...)
    if b:
        inputs.append(g.const("bias", b[0]))
    pads = _spatial_pads(layer, kernel, strides, dilation)
    g.node(
        "Conv",
        inputs,
        kernel_shape=list(kernel),
        strides=list(strides),
        pads=pads,
        dilations=list(dilation),
        group=groups,
    )
    _activation(g, cfg.get("activation"))


def _depthwise(g: Graph, layer: Layer, pointwise: bool) -> None:
    cfg = layer.get_config()
    ws = _weights(layer)
    dw = ws[0]  # (fh, fw, cin, depth_multiplier); TF's output channel c*dm + m
    fh, fw, cin, dm = dw.shape
    kernel, strides, dilation = (fh, fw), _pair(cfg.get("strides", 1)), _pair(cfg.get("dilation_rate", 1))
    g.nchw()
    inputs = [g.current, g.const("depthwise", dw.transpose(2, 3, 0, 1).reshape(cin * dm, 1, fh, fw))]
    use_bias = bool(cfg.get("use_bias", True))
    if use_bias and not pointwise:
        inputs.append(g.const("bias", ws[1]))
    pads = _spatial_pads(layer, kernel, strides, dilation)
    g.node("Conv", inputs, kernel_shape=[fh, fw], strides=list(strides), pads=pads, dilations=list(dilation), group=cin)
    if pointwise:
        pw = ws[1]  # (1, 1, cin*dm, filters)
        inputs = [g.current, g.const("pointwise", pw.transpose(3, 2, 0, 1))]
        if use_bias:
            inputs.append(g.const("bias", ws[2]))
        g.node("Conv", inputs, kernel_shape=[1, 1])
    _activation(g, cfg.get("activation"))


def _pool(op: str) -> Callable[[Graph, Layer], None]:
    def convert(g: Graph, layer: Layer) -> None:
        cfg = layer.get_config()
        kernel = _pair(cfg["pool_size"])
        strides = _pair(cfg.get("strides") or kernel)
        g.nchw()
        extra = {"count_include_pad": 0} if op == "AveragePool" else {}
        g.apply(
            op, kernel_shape=list(kernel), strides=list(strides), pads=_spatial_pads(layer, kernel, strides), **extra
        )

    return convert


def _global_pool(op: str) -> Callable[[Graph, Layer], None]:
    def convert(g: Graph, layer: Layer) -> None:
        g.nchw()
        g.apply(op)  # (n, c, 1, 1)
        if not layer.get_config().get("keepdims", False):
            g.apply("Flatten", axis=1)
            g.layout = "flat"

    return convert


def _dense(g: Graph, layer: Layer) -> None:
    w, *b = _weights(layer)
    g.nhwc()
    if b:
        g.node("Gemm", [g.current, g.const("kernel", w), g.const("bias", b[0])])
    else:
        g.node("MatMul", [g.current, g.const("kernel", w)])
    g.layout = "flat"
    _activation(g, layer.get_config().get("activation"))


def _flatten(g: Graph, layer: Layer) -> None:
    g.nhwc()  # TF's row-major NHWC order, so Dense weights carry over
    g.apply("Flatten", axis=1)
    g.layout = "flat"


def _reshape(g: Graph, layer: Layer) -> None:
    g.nhwc()
    target = [int(s) for s in layer.get_config()["target_shape"]]
    g.node("Reshape", [g.current, g.const("shape", [-1, *target], np.int64)])
    g.layout = "NHWC" if len(target) == 3 else "flat"


def _zero_padding(g: Graph, layer: Layer) -> None:
    pad = layer.get_config()["padding"]
    (top, bottom), (left, right) = (
        (_pair(pad[0]), _pair(pad[1])) if not np.isscalar(pad) and len(pad) == 2 else ((pad, pad), (pad, pad))
    )
    g.nchw()
    g.node("Pad", [g.current, g.const("pads", [0, 0, top, left, 0, 0, bottom, right], np.int64)], mode="constant")


def _batch_norm(g: Graph, layer: Layer) -> None:
    cfg = layer.get_config()
    ws = _weights(layer)
    c = ws[-1].shape[0]
    gamma = ws.pop(0) if cfg.get("scale", True) else np.ones(c)
    beta = ws.pop(0) if cfg.get("center", True) else np.zeros(c)
    mean, var = ws
    if len(layer.input_shape) not in (1, 3):
        raise ValueError(
            f"BatchNormalization on per-sample shape {layer.input_shape} is exported for (c,) or (h, w, c)"
        )
    g.nchw()  # channels on axis 1; a 2-D (n, c) input already has them there
    names = [g.const(k, v) for k, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
    g.node("BatchNormalization", [g.current, *names], epsilon=float(cfg.get("epsilon", 1e-3)))


def _softmax(g: Graph, layer: Layer) -> None:
    g.apply("Softmax", axis=1 if g.layout == "NCHW" else -1)


CONVERTERS: dict[str, Callable[[Graph, Layer], None]] = {
    "Conv2D": _conv,
    "Dense": _dense,
    "MaxPool2D": _pool("MaxPool"),
    "AvgPool2D": _pool("AveragePool"),
    "Flatten": _flatten,
    "ReLU": lambda g, layer: _activation(g, "relu"),
    "Sigmoid": lambda g, layer: _activation(g, "sigmoid"),
    "Tanh": lambda g, layer: _activation(g, "tanh"),
    "Softmax": _softmax,
    # Layers another branch adds to xpnn.layers (Keras names and configs).
    "Activation": lambda g, layer: _activation(g, layer.get_config().get("activation")),
    "Dropout": lambda g, layer: None,  # inference: identity
    "BatchNormalization": _batch_norm,
    "GlobalAveragePooling2D": _global_pool("GlobalAveragePool"),
    "GlobalMaxPooling2D": _global_pool("GlobalMaxPool"),
    "ZeroPadding2D": _zero_padding,
    "Reshape": _reshape,
    "LeakyReLU": lambda g, layer: g.apply("LeakyRelu", alpha=float(layer.get_config().get("negative_slope", 0.3))),
    "ELU": lambda g, layer: g.apply("Elu", alpha=float(layer.get_config().get("alpha", 1.0))),
    "DepthwiseConv2D": lambda g, layer: _depthwise(g, layer, pointwise=False),
    "SeparableConv2D": lambda g, layer: _depthwise(g, layer, pointwise=True),
}
CONVERTERS["MaxPooling2D"] = CONVERTERS["MaxPool2D"]
CONVERTERS["AveragePooling2D"] = CONVERTERS["AvgPool2D"]


def to_onnx_model(model: Sequential, opset: int = DEFAULT_OPSET, dtype: str | None = None) -> Any:
    """The model as an in-memory `onnx.ModelProto` (checked by onnx.checker), in `dtype` (default the model's)."""
    onnx = _onnx()
    model._require_built()
    dtype = np.dtype(dtype or model.dtype)
    g = Graph(onnx, dtype)
    g.layout = "NHWC" if len(model.input_shape) == 3 else "flat"
    problems = []
    for i, layer in enumerate(model.layers):
        convert = CONVERTERS.get(type(layer).__name__)
        if convert is None:
            problems.append(f"layer {i} ({type(layer).__name__}): no ONNX mapping")
            continue
        try:
            convert(g, layer)
        except ValueError as exc:
            problems.append(f"layer {i} ({type(layer).__name__}): {exc}")
    if problems:
        raise ValueError("the model cannot be exported to ONNX:\n  " + "\n  ".join(problems))
    if g.layout == "NCHW":
        g.nhwc()
    g.node("Identity", [g.current])
    g.nodes[-1].output[0] = "output"
    elem = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    graph = onnx.helper.make_graph(
        g.nodes,
        "xpnn",
        [onnx.helper.make_tensor_value_info("input", elem, ["batch", *model.input_shape])],
        [onnx.helper.make_tensor_value_info("output", elem, ["batch", *model.output_shape])],
        g.initializers,
    )
    proto = onnx.helper.make_model(graph, producer_name="xpnn", opset_imports=[onnx.helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(
    model: Sequential, path: str | os.PathLike, opset: int = DEFAULT_OPSET, dtype: str | None = None
) -> Path:
    """Write the model as an ONNX file (atomically); its input is NHWC like the model's.

    `dtype` defaults to the model's; onnxruntime's CPU Conv has no float64 kernel, so a float64 model
    meant for onnxruntime is exported with dtype="float32".
    """
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a folder; pass a file name such as {target / 'model.onnx'}.")
    data = to_onnx_model(model, opset, dtype).SerializeToString()
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))
