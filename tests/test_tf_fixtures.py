"""xpnn against TensorFlow's float64 truth (tests/fixtures/tf_*.h5 from scripts/make_tf_fixtures.py), layer by layer.

For every fixture and step: the cost, logits, every layer's output and input gradient, dW and db, and the
weights after the optimizer's update. float64 runs must agree to 1e-10 relative, float32 runs to 1e-5
(atol scaled to each array's largest magnitude). TensorFlow is never imported here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import BACKENDS

import xpnn
from xpnn.trace import TraceRecorder, read_trace

FIXTURES = Path(__file__).parent / "fixtures"
FILES = sorted(FIXTURES.glob("tf_*.h5"))
RTOL = {"float64": 1e-10, "float32": 1e-5}


def _read_list(group: h5py.Group) -> list[np.ndarray]:
    return [np.asarray(group[k]) for k in sorted(group)]


def load_fixture(path: Path) -> dict:
    """Everything in one fixture file as host arrays (x rebuilt from its recipe when not stored)."""
    with h5py.File(path, "r") as f:
        fx = {
            "layers": json.loads(f.attrs["layers"]),
            "optimizer": json.loads(f.attrs["optimizer"]),
            "y": np.asarray(f["y"]),
            "initial_weights": _read_list(f["initial_weights"]),
            "x_sha256": f.attrs["x_sha256"],
            "steps": [],
        }
        if "x" in f:
            fx["x"] = np.asarray(f["x"])
        else:
            assert f.attrs["x_recipe"].startswith("np.random.seed(1); x = np.random.randn(1, 64, 64, 3)")
            np.random.seed(1)
            fx["x"] = np.random.randn(1, 64, 64, 3)
        for name in sorted(f["steps"], key=int):
            g = f["steps"][name]
            step = {"cost": float(np.asarray(g["cost"])), "logits": np.asarray(g["logits"])}
            for key in ("grads", "weights", "outputs", "input_grads"):
                step[key] = _read_list(g[key]) if key in g else None
            fx["steps"].append(step)
    return fx


def build_model(fx: dict, dtype: str) -> xpnn.Sequential:
    """The fixture's network in xpnn, from its layer list, with TensorFlow's initial weights."""
    layers = [
        getattr(xpnn.layers, spec["class"])(**{k: v for k, v in spec.items() if k != "class"}) for spec in fx["layers"]
    ]
    x = fx["x"]
    model = xpnn.Sequential(layers, dtype=dtype).build(x.shape[1:], seed=0)
    model.set_weights(fx["initial_weights"])
    return model


def make_optimizer(spec: dict) -> xpnn.optimizers.Optimizer:
    args = {k: v for k, v in spec.items() if k != "class"}
    return xpnn.SGD(**args) if spec["class"] == "SGD" else xpnn.Adam(**args)


def assert_rel(actual, expected, rtol: float, what: str) -> None:
    """Element-wise rtol, with atol = rtol · max|expected| so that near-zero entries are judged by the array's scale."""
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != TensorFlow's {expected.shape}"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.fixture(scope="module", params=FILES, ids=[p.stem for p in FILES])
def fixture(request):
    return load_fixture(request.param)


def test_fixtures_are_present_and_small():
    names = {p.stem for p in FILES}
    assert {"tf_seed_one_image", "tf_adam_minibatch"} <= names and len(names) >= 5
    assert sum(p.stat().st_size for p in FILES) < 1024 * 1024


def test_x_matches_what_tensorflow_saw(fixture):
    assert hashlib.sha256(np.ascontiguousarray(fixture["x"]).tobytes()).hexdigest() == fixture["x_sha256"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_every_layer_every_step_equals_tensorflow(fixture, dtype, backend_name):
    xpnn.set_backend(backend_name)
    rtol = RTOL[dtype]
    model = build_model(fixture, dtype)
    optimizer = make_optimizer(fixture["optimizer"])
    x, y = fixture["x"], fixture["y"]
    for k, step in enumerate(fixture["steps"], start=1):
        t = xpnn.trace(model, x, y)
        assert_rel(t.cost, step["cost"], rtol, f"step {k} cost")
        assert_rel(t.logits, step["logits"], rtol, f"step {k} logits")
        for i, (layer, (out, tf_out)) in enumerate(zip(model.layers, zip(t.outputs, step["outputs"] or []))):
            assert_rel(out, tf_out, rtol, f"step {k} layer {i} {layer!r} output")
        for i, (layer, (dx, tf_dx)) in enumerate(zip(model.layers, zip(t.input_grads, step["input_grads"] or []))):
            assert_rel(dx, tf_dx, rtol, f"step {k} layer {i} {layer!r} input gradient")
        for i, (g, tf_g) in enumerate(zip(t.grads, step["grads"], strict=True)):
            assert_rel(g, tf_g, rtol, f"step {k} gradient {i} ({'dW' if i % 2 == 0 else 'db'})")
        model.train_on_batch(x, y, optimizer=optimizer)
        for i, (w, tf_w) in enumerate(zip(model.get_weights(), step["weights"], strict=True)):
            assert_rel(w, tf_w, rtol, f"step {k} weights {i} after the update")


def test_fixtures_record_every_layer_where_promised(fixture):
    first = fixture["steps"][0]
    if first["outputs"] is not None:
        assert len(first["outputs"]) == len(first["input_grads"]) == len(fixture["layers"])
    assert len(first["grads"]) == len(first["weights"]) == len(fixture["initial_weights"])


def test_trace_recorder_reproduces_tensorflow_run(tmp_path):
    """A TraceRecorder over train_on_batch writes TF's per-step costs, gradients and weights (float64)."""
    fx = load_fixture(FIXTURES / "tf_adam_minibatch.h5")
    model = build_model(fx, "float64")
    optimizer = make_optimizer(fx["optimizer"])
    path = tmp_path / "adam.h5"
    with TraceRecorder(path) as rec:
        for _ in fx["steps"]:
            model.train_on_batch(fx["x"], fx["y"], optimizer=optimizer, trace=rec)
    run = read_trace(path)
    assert len(run.steps) == len(fx["steps"])
    for mine, theirs in zip(run.steps, fx["steps"]):
        assert_rel(mine.cost, theirs["cost"], 1e-10, "cost")
        for a, b in zip(mine.grads, theirs["grads"], strict=True):
            assert_rel(a, b, 1e-10, "grads")
        for a, b in zip(mine.weights, theirs["weights"], strict=True):
            assert_rel(a, b, 1e-10, "weights")
