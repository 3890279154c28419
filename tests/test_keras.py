"""Keras model files: Keras-trained fixtures predict the same in xpnn, xpnn writes what Keras reads, bad files refused.

The fixtures come from scripts/make_keras_fixtures.py (Keras 3); these tests read them without TensorFlow.
The round trip through Keras itself runs where TensorFlow is installed.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import xpnn.keras_format as xk
from xpnn import layers as L
from xpnn import model as model_module

Sequential = getattr(model_module, "Sequential", None) or model_module.Model  # Model after the floors split
FIXTURES = Path(__file__).parent / "fixtures"
RTOL = {"float32": 1e-5, "float64": 1e-12}


def outputs(name: str) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(FIXTURES / "keras_outputs.h5", "r") as f:
        return f[name]["x"][()], f[name]["y"][()]


def assert_rel(actual, expected, rtol):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


def has_layers(*names: str) -> bool:
    return all(hasattr(L, n) for n in names)


@pytest.mark.parametrize("name", ["basic_float32.keras", "basic_float64.keras", "basic_float64.h5"])
def test_keras_trained_model_predicts_the_same(name):
    x, y = outputs(name)
    model = xk.load_model(FIXTURES / f"keras_{name}")
    assert str(model.dtype) == str(y.dtype)
    assert_rel(model.predict(x), y, RTOL[str(y.dtype)])


NEW_LAYERS = {
    "new_layers_a.keras": (
        "ZeroPadding2D",
        "BatchNormalization",
        "LeakyReLU",
        "DepthwiseConv2D",
        "ELU",
        "SeparableConv2D",
        "Dropout",
        "GlobalAveragePooling2D",
        "Reshape",
    ),
    "new_layers_b.keras": ("GlobalMaxPooling2D", "Activation"),
}


@pytest.mark.parametrize("name", sorted(NEW_LAYERS))
def test_new_layer_types_when_xpnn_has_them(name):
    if not has_layers(*NEW_LAYERS[name]):
        with pytest.raises(ValueError, match="unknown layer|not supported"):
            xk.load_model(FIXTURES / f"keras_{name}")
        pytest.skip(f"xpnn.layers lacks some of {NEW_LAYERS[name]} on this branch; the mapping waits for them")
    x, y = outputs(name)
    assert_rel(xk.load_model(FIXTURES / f"keras_{name}").predict(x), y, RTOL["float32"])


def test_final_softmax_is_kept():
    """Keras's Dense(activation='softmax') stays a softmax: xpnn's model outputs probabilities too."""
    model = xk.load_model(FIXTURES / "keras_basic_float64.keras")
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    assert type(last).__name__ == "Softmax" or getattr(activation, "name", activation) == "softmax"
    x, _ = outputs("basic_float64.keras")
    np.testing.assert_allclose(model.predict(x).sum(axis=1), 1.0, rtol=1e-12)


def test_one_error_lists_every_unsupported_part():
    with pytest.raises(ValueError) as err:
        xk.load_model(FIXTURES / "keras_unsupported.keras")
    text = str(err.value)
    for part in ("data_format='channels_first'", "kernel_constraint", "LayerNormalization", "kernel_regularizer"):
        assert part in text


def test_functional_model_refused():
    with pytest.raises(ValueError, match="Sequential models only"):
        xk.load_model(FIXTURES / "keras_functional.keras")


def test_model_class_and_dtype_are_parameters():
    class Front(Sequential):
        pass

    model = xk.load_model(FIXTURES / "keras_basic_float64.keras", cls=Front, dtype="float32")
    assert isinstance(model, Front) and str(model.dtype) == "float32"


def small_model(dtype: str = "float64") -> Sequential:
    layers = [
        L.Conv2D(3, 2, strides=2, padding="same"),
        L.ReLU(),
        L.MaxPool2D(3, strides=2, padding="same"),
        L.Conv2D(4, 3),
        L.Sigmoid(),
        L.AvgPool2D(2, strides=1, padding="same"),
        L.Tanh(),
        L.Flatten(),
        L.Dense(5, use_bias=False),
        L.Softmax(),
    ]
    return Sequential(layers, dtype=dtype).build((11, 11, 2), seed=3)


def test_save_keras_then_load_without_tf(tmp_path):
    model = small_model()
    path = xk.save_keras(model, tmp_path / "m.keras")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == sorted(xk.ARCHIVE_MEMBERS)
        config = json.loads(zf.read("config.json"))
    assert [e["class_name"] for e in config["config"]["layers"]][:3] == ["InputLayer", "Conv2D", "ReLU"]
    back = xk.load_model(path)
    assert [type(a).__name__ for a in back.layers] == [type(a).__name__ for a in model.layers]
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(3, 11, 11, 2))
    np.testing.assert_array_equal(back.predict(x), model.predict(x))


def test_save_keras_refuses_folders_and_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        xk.save_keras(small_model(), tmp_path)
    with pytest.raises(ValueError, match="must end in .keras"):
        xk.save_keras(small_model(), tmp_path / "m.h5")
    assert list(tmp_path.iterdir()) == []


# ---- files from strangers ---------------------------------------------------------------------------
def rewrite(tmp_path: Path, replace: dict[str, bytes | None], extra: dict[str, bytes] | None = None) -> Path:
    """A copy of the float32 fixture archive with members replaced, dropped (None) or added."""
    src = FIXTURES / "keras_basic_float32.keras"
    dst = tmp_path / "bad.keras"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = replace.get(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst


def weights_bytes() -> bytes:
    with zipfile.ZipFile(FIXTURES / "keras_basic_float32.keras") as zf:
        return zf.read("model.weights.h5")


def edited_weights(edit) -> bytes:
    buffer = io.BytesIO(weights_bytes())
    with h5py.File(buffer, "r+") as f:
        edit(f)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"../evil.py": b"x"}, "unsafe member name"),
        ({"/etc/evil": b"x"}, "unsafe member name"),
        ({"payload.pkl": b"x"}, "unexpected member"),
        ({"config.json": b"{}"}, "duplicate member"),
    ],
)
def test_archive_members_checked(tmp_path, extra, message):
    with pytest.warns(UserWarning) if "config.json" in extra else _nothing():
        path = rewrite(tmp_path, {}, extra)
    with pytest.raises(ValueError, match=message):
        xk.load_model(path)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_sizes_checked_before_reading(tmp_path, monkeypatch):
    path = rewrite(tmp_path, {})
    monkeypatch.setattr(xk, "MAX_CONFIG_BYTES", 100)
    with pytest.raises(ValueError, match="config.json declares"):
        xk.load_model(path)
    monkeypatch.setattr(xk, "MAX_ARCHIVE_BYTES", 1000)
    with pytest.raises(ValueError, match="above the 1000 limit"):
        xk.load_model(path)


def test_missing_or_damaged_members(tmp_path):
    with pytest.raises(ValueError, match="no model.weights.h5"):
        xk.load_model(rewrite(tmp_path, {"model.weights.h5": None}))
    with pytest.raises(ValueError, match="not valid JSON"):
        xk.load_model(rewrite(tmp_path, {"config.json": b"{not json"}))
    with pytest.raises(ValueError, match="not a readable HDF5"):
        xk.load_model(rewrite(tmp_path, {"model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 50}))
    truncated = tmp_path / "cut.keras"
    truncated.write_bytes((FIXTURES / "keras_basic_float32.keras").read_bytes()[:3000])
    with pytest.raises(ValueError, match="not a readable zip|not a .keras archive"):
        xk.load_model(truncated)
    other = tmp_path / "other.keras"
    other.write_bytes(b"hello")
    with pytest.raises(ValueError, match="neither"):
        xk.load_model(other)


def _external_link(f):
    f["layers/dense/vars/link"] = h5py.ExternalLink("/etc/passwd", "/x")


def _soft_link(f):
    f["layers/dense/vars/soft"] = h5py.SoftLink("/layers/conv2d/vars/0")


def _virtual(f):
    layout = h5py.VirtualLayout(shape=(4,), dtype="f4")
    layout[:] = h5py.VirtualSource("other.h5", "data", shape=(4,))
    f["layers/dense"].create_virtual_dataset("virt", layout)


def _external_storage(f):
    f["layers/dense"].create_dataset("ext", shape=(4,), dtype="f4", external=[("raw.bin", 0, 16)])


@pytest.mark.parametrize(
    "edit, message",
    [
        (_external_link, "is an external link"),
        (_soft_link, "is a soft link"),
        (_virtual, "virtual dataset"),
        (_external_storage, "keeps its data in an external file"),
    ],
)
def test_hdf5_features_refused(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        xk.load_model(rewrite(tmp_path, {"model.weights.h5": edited_weights(edit)}))


def test_weight_shapes_checked_before_reading(tmp_path):
    def wrong_shape(f):
        del f["layers/dense/vars/0"]
        f["layers/dense/vars"].create_dataset("0", shape=(10**6, 10**3), dtype="f4")  # declared, never read

    with pytest.raises(ValueError, match=r"declares shape \(1000000, 1000\)"):
        xk.load_model(rewrite(tmp_path, {"model.weights.h5": edited_weights(wrong_shape)}))

    def missing(f):
        del f["layers/dense_1"]

    with pytest.raises(ValueError, match="no layers/dense_1/vars"):
        xk.load_model(rewrite(tmp_path, {"model.weights.h5": edited_weights(missing)}))


def test_legacy_h5_checks(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras model file"):
        xk.load_model(plain)
    bad = tmp_path / "bad.h5"
    bad.write_bytes((FIXTURES / "keras_basic_float64.h5").read_bytes())
    with h5py.File(bad, "r+") as f:
        f["model_weights/extra"] = h5py.ExternalLink("elsewhere.h5", "/x")
    with pytest.raises(ValueError, match="is an external link"):
        xk.load_model(bad)


# ---- through Keras itself (TensorFlow installed) -----------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_through_keras(tmp_path, dtype):
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    model = small_model(dtype)
    x = np.random.default_rng(1).normal(size=(4, 11, 11, 2)).astype(dtype)
    theirs = keras.models.load_model(xk.save_keras(model, tmp_path / "x.keras"))
    assert_rel(np.asarray(theirs(x)), model.predict(x), RTOL[dtype])  # called eagerly: predict casts to floatx
    theirs.save(tmp_path / "k.keras")
    back = xk.load_model(tmp_path / "k.keras")
    assert_rel(back.predict(x), model.predict(x), RTOL[dtype])


# ---- the table's entries for layers another branch adds, with stand-in classes ------------------------
class _StandIn(L.Layer):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs


class ZeroPadding2D(_StandIn):
    def __init__(self, padding=1):
        super().__init__(padding=padding)


class BatchNormalization(_StandIn):
    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True):
        super().__init__(axis=axis, momentum=momentum, epsilon=epsilon, center=center, scale=scale)


class LeakyReLU(_StandIn):
    def __init__(self, negative_slope=0.3):
        super().__init__(negative_slope=negative_slope)


class DepthwiseConv2D(_StandIn):
    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, dilation_rate=1, use_bias=True):
        super().__init__(kernel_size=kernel_size, strides=strides, padding=padding, depth_multiplier=depth_multiplier)


class ELU(_StandIn):
    def __init__(self, alpha=1.0):
        super().__init__(alpha=alpha)


class SeparableConv2D(_StandIn):
    def __init__(self, filters, kernel_size, strides=1, padding="valid", depth_multiplier=1, activation=None):
        super().__init__(filters=filters, kernel_size=kernel_size, padding=padding, activation=activation)


class Dropout(_StandIn):
    def __init__(self, rate, seed=None):
        super().__init__(rate=rate, seed=seed)


class GlobalAveragePooling2D(_StandIn):
    def __init__(self, keepdims=False):
        super().__init__(keepdims=keepdims)


class Reshape(_StandIn):
    def __init__(self, target_shape):
        super().__init__(target_shape=target_shape)


def test_table_passes_keras_options_to_the_coming_layers(monkeypatch):
    for cls in (ZeroPadding2D, BatchNormalization, LeakyReLU, DepthwiseConv2D, ELU, SeparableConv2D, Dropout):
        monkeypatch.setattr(L, cls.__name__, cls, raising=False)
    monkeypatch.setattr(L, "GlobalAveragePooling2D", GlobalAveragePooling2D, raising=False)
    monkeypatch.setattr(L, "Reshape", Reshape, raising=False)
    with zipfile.ZipFile(FIXTURES / "keras_new_layers_a.keras") as zf:
        config = json.loads(zf.read("config.json"))
    plan = xk.plan_from_config(config)
    got = [(type(layer).__name__, getattr(layer, "kwargs", None)) for layer in plan.layers]
    assert got[0] == ("ZeroPadding2D", {"padding": ((1, 2), (0, 1))})
    assert got[1][0] == "Conv2D" and not plan.layers[1].use_bias
    assert got[2] == (
        "BatchNormalization",
        {"axis": -1, "momentum": 0.9, "epsilon": 1e-3, "center": True, "scale": True},
    )
    assert got[3] == ("LeakyReLU", {"negative_slope": 0.1})
    assert got[4] == (
        "DepthwiseConv2D",
        {"kernel_size": (3, 3), "strides": (1, 1), "padding": "same", "depth_multiplier": 2},
    )
    assert got[5] == ("ELU", {"alpha": 0.5})
    assert got[6] == ("SeparableConv2D", {"filters": 6, "kernel_size": (3, 3), "padding": "same", "activation": "relu"})
    assert got[7] == ("Dropout", {"rate": 0.3, "seed": 1})
    assert got[8] == ("GlobalAveragePooling2D", {"keepdims": False})
    assert got[9] == ("Reshape", {"target_shape": (2, 3)})
    assert [n for n, _ in got[10:]] == ["Flatten", "Dense"]
    # An option the xpnn class does not take, at a value that matters, is reported by name.
    config["config"]["layers"][5]["config"]["dilation_rate"] = [2, 2]
    monkeypatch.setattr(L, "DepthwiseConv2D", SeparableConv2D)  # takes no dilation_rate
    with pytest.raises(ValueError, match=r"dilation_rate=\(2, 2\)"):
        xk.plan_from_config(config)


def test_save_table_for_the_coming_layers_through_keras(tmp_path):
    """Stand-ins carrying a Keras layer's arguments and weights are written by save_keras; Keras reads them back."""
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    import types

    K = keras.layers
    cases = [
        (K.ZeroPadding2D(((1, 0), (2, 1))), (5, 5, 2)),
        (K.BatchNormalization(momentum=0.9, epsilon=1e-2), (5, 5, 2)),
        (K.DepthwiseConv2D(3, padding="same", depth_multiplier=2), (5, 5, 2)),
        (K.SeparableConv2D(3, 2, activation="relu"), (5, 5, 2)),
        (K.LeakyReLU(negative_slope=0.2), (5, 5, 2)),
        (K.ELU(alpha=0.4), (5, 5, 2)),
        (K.Dropout(0.4, seed=3), (5, 5, 2)),
        (K.GlobalMaxPooling2D(), (5, 5, 2)),
        (K.Reshape((10, 5)), (5, 5, 2)),
        (K.Activation("elu"), (5, 5, 2)),
    ]
    rng = np.random.default_rng(0)
    for layer, shape in cases:
        x = rng.normal(size=(2, *shape)).astype("float32")
        want = np.asarray(layer(x))
        if layer.weights:
            layer.set_weights([w + rng.uniform(0.1, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
            want = np.asarray(layer(x))
        name = type(layer).__name__
        keys = xk.XPNN_TO_KERAS[name][2]
        config = {k: v for k, v in layer.get_config().items() if k in keys}
        stand_in = type(name, (L.Layer,), {"get_config": lambda self, c=config: c})()
        stand_in.input_shape = shape
        stand_in.params = {str(i): w for i, w in enumerate(layer.get_weights())}
        weights = layer.get_weights()
        model = types.SimpleNamespace(
            layers=[stand_in],
            dtype=np.dtype("float32"),
            input_shape=shape,
            _require_built=lambda: None,
            get_weights=lambda w=weights: w,
        )
        path = tmp_path / f"{name}.keras"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("config.json", json.dumps(xk.keras_config(model)))
            zf.writestr("metadata.json", "{}")
            zf.writestr("model.weights.h5", xk.keras_weights_h5(model))
        got = np.asarray(keras.models.load_model(path)(x))
        assert_rel(got, want, 1e-6)


def test_keras2_style_h5(tmp_path):
    """tf.keras 2.x files: batch_input_shape on the first layer, plain dtype strings, weights named 'kernel:0'."""
    path = tmp_path / "keras2.h5"
    path.write_bytes((FIXTURES / "keras_basic_float64.h5").read_bytes())
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        entries = config["config"]["layers"]
        first = entries.pop(0)
        for entry in entries:
            entry["config"]["dtype"] = "float64"
        entries[0]["config"]["batch_input_shape"] = first["config"]["batch_shape"]
        f.attrs["model_config"] = json.dumps(config)
        for name in f["model_weights"].attrs["layer_names"]:
            group = f["model_weights"][name]
            new_names = []
            for old in group.attrs["weight_names"]:
                old = old.decode() if isinstance(old, bytes) else str(old)
                new = f"{name}/{old.rsplit('/', 1)[1]}:0"
                group.move(old, new)
                new_names.append(new.encode())
            group.attrs["weight_names"] = new_names
    x, y = outputs("basic_float64.h5")
    assert_rel(xk.load_model(path).predict(x), y, RTOL["float64"])


PER_LAYER = {
    "conv_same_stride2": ([L.Conv2D(3, 4, strides=2, padding="same")], (9, 11, 2)),
    "conv_valid_no_bias": ([L.Conv2D(4, (2, 3), strides=(1, 2), use_bias=False)], (7, 8, 3)),
    "maxpool_same": ([L.MaxPool2D(3, strides=2, padding="same")], (8, 9, 3)),
    "avgpool_same": ([L.AvgPool2D(3, strides=2, padding="same")], (8, 7, 2)),
    "relu": ([L.ReLU()], (4, 4, 2)),
    "sigmoid": ([L.Sigmoid()], (4, 4, 2)),
    "tanh": ([L.Tanh()], (4, 4, 2)),
    "softmax": ([L.Softmax()], (4, 4, 2)),
    "flatten_dense": ([L.Flatten(), L.Dense(5)], (3, 4, 2)),
}


@pytest.mark.parametrize("case", sorted(PER_LAYER))
def test_each_layer_type_round_trips_through_keras(tmp_path, case):
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    layers, shape = PER_LAYER[case]
    model = Sequential(layers, dtype="float64").build(shape, seed=4)
    x = np.random.default_rng(2).normal(size=(3, *shape))
    theirs = keras.models.load_model(xk.save_keras(model, tmp_path / "x.keras"))
    assert_rel(np.asarray(theirs(x)), model.predict(x), RTOL["float64"])
    theirs.save(tmp_path / "k.keras")
    assert_rel(xk.load_model(tmp_path / "k.keras").predict(x), model.predict(x), RTOL["float64"])


def test_public_keras_load_gives_a_sequential_that_trains_and_save_dispatches(tmp_path):
    """xpnn.keras.load_model and xpnn.load_model read Keras files into an xpnn.Sequential; save(".keras") writes one."""
    import xpnn.keras

    model = xpnn.Sequential([xpnn.Flatten(), xpnn.Dense(3)], dtype="float32").build((4, 4, 1), seed=1)
    model.save(tmp_path / "m.keras")
    for loaded in (xpnn.keras.load_model(tmp_path / "m.keras"), xpnn.load_model(tmp_path / "m.keras")):
        assert isinstance(loaded, xpnn.Sequential)
        for u, v in zip(loaded.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(u, v)
    x = np.random.default_rng(0).random((8, 4, 4, 1))
    loaded.fit(x, np.arange(8) % 3, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="is a folder; save to a file inside it"):
        model.save(tmp_path)
