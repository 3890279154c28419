"""Optimizers, schedules, losses and metrics against TensorFlow/Keras (tests/fixtures/keras_*.h5).

The fixtures come from scripts/make_tf_training_fixtures.py (TF's raw Apply* kernels, Keras 3's optimizers on
float64 variables with float32-exact hyperparameters, Keras's schedules, losses and metrics); TensorFlow is never
imported here. float64 must agree to 1e-10 relative, float32 to 1e-5 (atol scaled to each array's largest value).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import xpnn
from xpnn import losses, metrics, schedules
from xpnn.optimizers import optimizer_from_config

FIXTURES = Path(__file__).parent / "fixtures"
RTOL = {"float64": 1e-10, "float32": 1e-5}


def assert_rel(actual, expected, rtol: float, what: str) -> float:
    """Element-wise rtol with atol = rtol · max|expected|; returns the largest difference relative to that scale."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)
    return float(np.abs(actual - expected).max() / scale) if scale else 0.0


def _optimizer_cases():
    with h5py.File(FIXTURES / "keras_optimizers.h5", "r") as f:
        return sorted(name for name in f if isinstance(f[name], h5py.Group))


def optimizer_run(case: str, dtype: str, backend) -> tuple[list[np.ndarray], np.ndarray, int]:
    """xpnn's weights after each step of a fixture case, TF's, and the optimizer's final step count."""
    with h5py.File(FIXTURES / "keras_optimizers.h5", "r") as f:
        shapes = [tuple(s) for s in json.loads(f.attrs["shapes"])]
        w0, grads = np.asarray(f["w0"]), np.asarray(f["grads"])
        spec, expected = json.loads(f[case].attrs["optimizer"]), np.asarray(f[case]["weights"])
    bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

    def split(flat):
        return [backend.asarray(flat[a:b].reshape(s).astype(dtype)) for a, b, s in zip(bounds, bounds[1:], shapes)]

    opt = optimizer_from_config(spec)
    params, got = split(w0), []
    for g in grads:
        opt.apply(params, split(g))
        got.append(np.concatenate([backend.to_host(p).reshape(-1) for p in params]))
    return got, expected, opt.iterations


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", _optimizer_cases())
def test_optimizer_matches_tensorflow(case, dtype, backend):
    got, expected, iterations = optimizer_run(case, dtype, backend)
    for t, weights in enumerate(got):
        assert weights.dtype == np.dtype(dtype)
        assert_rel(weights, expected[t], RTOL[dtype], f"{case} step {t + 1}")
    assert iterations == len(expected) >= 5


def _schedule_cases():
    with h5py.File(FIXTURES / "keras_schedules.h5", "r") as f:
        return sorted(name for name in f if name != "steps")


@pytest.mark.parametrize("case", _schedule_cases())
def test_schedule_matches_keras(case):
    with h5py.File(FIXTURES / "keras_schedules.h5", "r") as f:
        steps, spec, expected = (
            np.asarray(f["steps"]),
            json.loads(f[case].attrs["schedule"]),
            np.asarray(f[case]["values"]),
        )
    schedule = schedules.schedule_from_config(spec)
    got = np.array([schedule(int(s)) for s in steps])
    assert_rel(got, expected, 1e-12, case)
    again = schedules.schedule_from_config(json.loads(json.dumps(schedules.schedule_config(schedule))))
    assert again == schedule and [again(int(s)) for s in steps] == got.tolist()


def _loss_cases():
    with h5py.File(FIXTURES / "keras_losses.h5", "r") as f:
        return sorted(f["losses"])


def _inputs(f: h5py.File) -> dict[str, np.ndarray]:
    return {key: np.asarray(f["inputs"][key]) for key in f["inputs"]}


def loss_run(case: str, dtype: str, weighted: bool, backend) -> tuple[float, np.ndarray, float, np.ndarray]:
    """xpnn's cost and gradient for a fixture case, and Keras's (TF in `dtype`)."""
    with h5py.File(FIXTURES / "keras_losses.h5", "r") as f:
        data, g = _inputs(f), f["losses"][case]
        loss = losses.loss_from_config(json.loads(g.attrs["loss"]))
        outputs, labels = data[g.attrs["outputs"]], data[g.attrs["labels"]]
        suffix = f"{dtype}{'_weighted' if weighted else ''}"
        value, grad = float(np.asarray(g[f"value_{suffix}"])), np.asarray(g[f"grad_{suffix}"])
    labels = labels if labels.dtype.kind == "i" else backend.asarray(labels.astype(dtype))
    sw = backend.asarray(data["sample_weight"].astype(dtype)) if weighted else None
    cost, dout = loss(backend.asarray(outputs.astype(dtype)), labels, sample_weight=sw)
    assert dout.dtype == np.dtype(dtype)
    return float(cost), backend.to_host(dout), value, grad


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", _loss_cases())
def test_loss_value_and_gradient_match_keras(case, dtype, weighted, backend):
    cost, dout, value, grad = loss_run(case, dtype, weighted, backend)
    assert_rel(cost, value, RTOL[dtype], f"{case} value")
    assert_rel(dout, grad, RTOL[dtype], f"{case} gradient")


def _metric_cases():
    with h5py.File(FIXTURES / "keras_losses.h5", "r") as f:
        return sorted(f["metrics"])


@pytest.mark.parametrize("case", _metric_cases())
def test_metric_matches_keras(case, backend):
    with h5py.File(FIXTURES / "keras_losses.h5", "r") as f:
        data, g = _inputs(f), f["metrics"][case]
        name, config = str(g.attrs["metric"]), json.loads(g.attrs["config"])
        outputs, labels, expected = data[g.attrs["outputs"]], data[g.attrs["labels"]], float(np.asarray(g["result"]))
    metric = (
        metrics.TopKCategoricalAccuracy(k=config["k"]) if "k" in config else metrics.resolve_metrics([name], None, 4)[0]
    )
    half = len(outputs) // 2  # two batches: the running sums must add up
    for part in (slice(0, half), slice(half, None)):
        metric.update(
            backend.asarray(outputs[part]), backend.asarray(labels[part]), backend.asarray(data["sample_weight"][part])
        )
    # Keras's top-k runs in float32 (InTopKV2 takes no float64): its weighted mean carries float32 rounding.
    assert metric.result() == pytest.approx(expected, rel=1e-6 if "k" in config else 1e-12)
    metric.reset()
    assert metric.result() == 0.0


def test_adam_and_sgd_keep_their_update_bit_for_bit():
    """Adam/SGD with the arguments they took before the Keras options: the backend kernels, exactly."""
    rng = np.random.default_rng(3)
    w0, grads = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((3, 4, 5)).astype(np.float32)
    kernels = xpnn.get_backend().kernels
    for opt in (xpnn.Adam(0.009), xpnn.SGD(0.009)):
        w, ref = w0.copy(), w0.copy()
        m, v = np.zeros_like(w0), np.zeros_like(w0)
        for t, g in enumerate(grads, start=1):
            opt.apply([w], [g])
            if isinstance(opt, xpnn.Adam):
                alpha = 0.009 * np.sqrt(1.0 - 0.999**t) / (1.0 - 0.9**t)
                kernels.adam_update(ref, g, m, v, float(alpha), 1.0 - 0.9, 1.0 - 0.999, 1e-8)
            else:
                kernels.sgd_update(ref, g, 0.009)
        assert np.array_equal(w, ref), type(opt).__name__
