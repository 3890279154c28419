"""ONNX export checked by onnxruntime: every layer type, float32, ≤ 1e-5 relative to xpnn's own predict.

Skipped where onnx or onnxruntime is missing. The entries for layers another branch adds are checked against
Keras itself (where TensorFlow is installed) through stand-in layers that carry the Keras layer's config and
weights, so the table is right before those xpnn layers exist.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from xpnn import layers as L
from xpnn import model as model_module
from xpnn.layers.base import Layer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from xpnn.onnx_export import export_onnx, to_onnx_model  # noqa: E402

Sequential = getattr(model_module, "Sequential", None) or model_module.Model  # Model after the floors split
RTOL = 1e-5


def run_onnx(proto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def assert_rel(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


CASES = {
    "conv_same_stride2_odd": ([L.Conv2D(3, 4, strides=2, padding="same")], (9, 11, 2)),
    "conv_valid_no_bias": ([L.Conv2D(4, (2, 3), strides=(1, 2), use_bias=False)], (7, 8, 3)),
    "maxpool_same_odd": ([L.MaxPool2D(3, strides=2, padding="same")], (8, 9, 3)),
    "maxpool_valid": ([L.MaxPool2D(2)], (6, 6, 2)),
    "avgpool_same": ([L.AvgPool2D(3, strides=2, padding="same")], (8, 7, 2)),
    "avgpool_valid_stride1": ([L.AvgPool2D((2, 3), strides=1)], (5, 6, 2)),
    "relu": ([L.Conv2D(3, 3, padding="same"), L.ReLU()], (5, 5, 2)),
    "sigmoid": ([L.Sigmoid()], (4, 4, 2)),
    "tanh": ([L.Tanh()], (4, 4, 2)),
    "softmax_4d": ([L.Conv2D(3, 1), L.Softmax()], (4, 4, 2)),
    "flatten_dense_softmax": ([L.Conv2D(2, 3, padding="same"), L.Flatten(), L.Dense(5), L.Softmax()], (5, 4, 3)),
    "dense_no_bias": ([L.Flatten(), L.Dense(3, use_bias=False)], (3, 3, 2)),
    "reference_net": (
        [
            L.Conv2D(8, 4, padding="same"),
            L.ReLU(),
            L.MaxPool2D(8, strides=8, padding="same"),
            L.Conv2D(16, 2, padding="same"),
            L.ReLU(),
            L.MaxPool2D(4, strides=4, padding="same"),
            L.Flatten(),
            L.Dense(6),
        ],
        (64, 64, 3),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_types_match_onnxruntime(case):
    layers, shape = CASES[case]
    model = Sequential(layers, dtype="float32").build(shape, seed=2)
    x = np.random.default_rng(0).normal(size=(3, *shape)).astype("float32")
    assert_rel(run_onnx(to_onnx_model(model), x), model.predict(x))


def test_float64_model_exported_as_float32(tmp_path):
    layers, shape = CASES["reference_net"]
    model = Sequential(layers, dtype="float64").build(shape, seed=1)
    x = np.random.default_rng(1).uniform(size=(2, *shape))
    path = export_onnx(model, tmp_path / "m.onnx", dtype="float32")
    proto = onnx.load(path)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert_rel(run_onnx(proto, x.astype("float32")), model.predict(x))


def test_unknown_layer_named():
    class Odd(Layer):
        def forward(self, x):
            return x, None

    model = Sequential([L.Flatten(), Odd()]).build((2, 2, 1))
    with pytest.raises(ValueError, match=r"layer 1 \(Odd\): no ONNX mapping"):
        to_onnx_model(model)


def test_folder_refused(tmp_path):
    model = Sequential([L.Flatten()]).build((2, 2, 1))
    with pytest.raises(ValueError, match="is a folder"):
        export_onnx(model, tmp_path)


# ---- entries for the layers another branch adds, checked against Keras --------------------------------
def stand_in(keras_layer, input_shape) -> Layer:
    """An object shaped like an xpnn layer of the same class name: Keras's config and weights, built shapes."""
    config = keras_layer.get_config()
    cls = type(type(keras_layer).__name__, (Layer,), {"get_config": lambda self: config})
    layer = cls()
    layer.input_shape = tuple(input_shape)
    layer.params = {str(i): np.asarray(w) for i, w in enumerate(keras_layer.get_weights())}
    return layer


def keras_cases(keras):
    K = keras.layers
    return {
        "Conv2D_dilated_grouped_elu": (
            K.Conv2D(4, 3, dilation_rate=2, groups=2, padding="same", activation="elu"),
            (9, 9, 4),
        ),
        "Dense_activation": (K.Dense(4, activation="softmax"), (6,)),
        "BatchNormalization_4d": (K.BatchNormalization(epsilon=1e-2), (5, 5, 3)),
        "BatchNormalization_2d": (K.BatchNormalization(center=False), (6,)),
        "GlobalAveragePooling2D": (K.GlobalAveragePooling2D(), (5, 4, 3)),
        "GlobalMaxPooling2D_keepdims": (K.GlobalMaxPooling2D(keepdims=True), (5, 4, 3)),
        "ZeroPadding2D": (K.ZeroPadding2D(((1, 2), (0, 3))), (4, 4, 2)),
        "Reshape": (K.Reshape((2, 3, 4)), (4, 6)),
        "LeakyReLU": (K.LeakyReLU(negative_slope=0.15), (4, 4, 2)),
        "ELU": (K.ELU(alpha=0.7), (4, 4, 2)),
        "Activation_swish": (K.Activation("swish"), (4, 4, 2)),
        "Activation_relu6": (K.Activation("relu6"), (4, 4, 2)),
        "Dropout": (K.Dropout(0.5, seed=1), (4, 4, 2)),
        "DepthwiseConv2D_same_stride2": (
            K.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2),
            (7, 8, 3),
        ),
        "SeparableConv2D": (K.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, activation="relu"), (6, 6, 3)),
    }


@pytest.mark.parametrize(
    "case",
    [
        "Conv2D_dilated_grouped_elu",
        "Dense_activation",
        "BatchNormalization_4d",
        "BatchNormalization_2d",
        "GlobalAveragePooling2D",
        "GlobalMaxPooling2D_keepdims",
        "ZeroPadding2D",
        "Reshape",
        "LeakyReLU",
        "ELU",
        "Activation_swish",
        "Activation_relu6",
        "Dropout",
        "DepthwiseConv2D_same_stride2",
        "SeparableConv2D",
    ],
)
def test_new_layer_entries_match_keras(case):
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    layer, shape = keras_cases(keras)[case]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, *shape)).astype("float32")
    out = np.asarray(layer(x))
    if layer.weights:  # move BatchNorm's statistics and biases off their initial values
        layer.set_weights([w + rng.uniform(0.1, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
        out = np.asarray(layer(x))
    model = types.SimpleNamespace(
        layers=[stand_in(layer, shape)],
        dtype=np.dtype("float32"),
        input_shape=shape,
        output_shape=out.shape[1:],
        _require_built=lambda: None,
    )
    assert_rel(run_onnx(to_onnx_model(model), x), out)
