"""Issue 14's layers against TensorFlow's float64 truth (fixtures/layers_tf.h5 by scripts/make_tf_layer_fixtures.py).

Each case rebuilds the layer from its xpnn class name and config, loads TF's weights, and compares the
output, the input gradient and the weight gradients (BatchNormalization: over several training steps,
with the moving statistics after each, then inference). float64 must agree to 1e-10 relative, float32
to 1e-5 (atol scaled to each array's largest magnitude). TensorFlow is never imported here.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import BACKENDS

import xpnn
from xpnn import regularizers
from xpnn.layers import layer_classes
from xpnn.layers.dropout import DropoutCache, dropout_backward, dropout_forward

FIXTURE = Path(__file__).parent / "fixtures" / "layers_tf.h5"
RTOL = {"float64": 1e-10, "float32": 1e-5}


def _read(group: h5py.Group, key: str) -> list[np.ndarray]:
    return [np.asarray(group[key][k]) for k in sorted(group[key], key=int)] if key in group else []


def load_cases() -> dict[str, dict]:
    with h5py.File(FIXTURE, "r") as f:
        cases = {}
        for name, g in f.items():
            if name == "regularizers":
                continue
            steps = []
            for k in sorted(g["steps"], key=int):
                s = g["steps"][k]
                step = {key: np.asarray(s[key]) for key in ("x", "dout", "out", "dx", "keep") if key in s}
                step.update(training=bool(s.attrs["training"]), grads=_read(s, "grads"), moving=_read(s, "moving"))
                steps.append(step)
            cases[name] = {
                "class_name": g.attrs["class_name"],
                "config": json.loads(g.attrs["config"]),
                "weights": _read(g, "weights"),
                "steps": steps,
            }
        return cases


CASES = load_cases()


def assert_close(actual, expected, dtype: str, what: str) -> None:
    actual = xpnn.get_backend().to_host(actual)
    finite = np.abs(expected[np.isfinite(expected)])
    atol = RTOL[dtype] * (finite.max() if finite.size else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dtype], atol=atol, err_msg=what)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_matches_tensorflow(name, dtype, backend):
    case = CASES[name]
    layer = layer_classes()[case["class_name"]](**case["config"])
    steps = case["steps"]
    layer.build(steps[0]["x"].shape[1:], np.random.default_rng(0), np.dtype(dtype))
    slots = list(layer.weights)
    assert len(slots) == len(case["weights"]), "weights in Keras order"
    for key, value in zip(slots, case["weights"]):
        store = layer.params if key in layer.params else layer.non_trainable
        assert store[key].shape == value.shape, key
        store[key] = backend.asarray(value, dtype=dtype)
    moving: list[np.ndarray] = []
    for i, step in enumerate(steps):
        x, dout = backend.asarray(step["x"], dtype=dtype), backend.asarray(step["dout"], dtype=dtype)
        if case["class_name"] == "Dropout":  # TF's mask, read off its output
            keep, scale = backend.asarray(step["keep"]), 1.0 / (1.0 - layer.rate)
            out, dx, grads = dropout_forward(x, keep, scale), dropout_backward(dout, DropoutCache(keep, scale)), {}
        else:
            out, cache = layer.forward(x, training=step["training"]) if layer.takes_training else layer.forward(x)
            dx, grads = layer.backward(dout, cache)
        where = f"{name} step {i}"
        assert_close(out, step["out"], dtype, f"{where}: output")
        assert_close(dx, step["dx"], dtype, f"{where}: dx")
        assert list(grads) == list(layer.params)
        for key, expected in zip(layer.params, step["grads"], strict=True):
            assert_close(grads[key], expected, dtype, f"{where}: d{key}")
        moving = step["moving"] or moving  # inference leaves the moving statistics as they were
        for key, expected in zip(layer.non_trainable, moving, strict=True):
            assert_close(layer.non_trainable[key], expected, dtype, f"{where}: {key}")


@pytest.mark.parametrize("name", ["L1", "L2", "L1L2"])
def test_regularizers_match_keras(name):
    with h5py.File(FIXTURE, "r") as f:
        g = f["regularizers"]
        w = np.asarray(g["w"])
        config = json.loads(g[name].attrs["config"])
        value, grad = float(np.asarray(g[name]["value"])), np.asarray(g[name]["grad"])
    reg = regularizers.get({"class_name": name, "config": config})
    assert reg.get_config() == {k: float(v) for k, v in config.items()}
    np.testing.assert_allclose(float(reg(w)), value, rtol=1e-12)
    np.testing.assert_allclose(reg.gradient(w), grad, rtol=1e-12)
