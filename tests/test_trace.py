"""xpnn.trace (one pass, every layer) and the trace= recorder of fit and train_on_batch."""

from __future__ import annotations

import importlib

import h5py
import numpy as np
import pytest
from conftest import numeric_grad

import xpnn
from xpnn import SGD, Adam, AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, Tanh
from xpnn.losses import softmax_cross_entropy
from xpnn.trace import TraceRecorder, read_trace
from xpnn.train import Callback


def small_model(dtype="float64", seed=0):
    layers = [Conv2D(3, 3, strides=2, padding="same"), Tanh(), MaxPool2D(2, padding="same"), Conv2D(4, 2)]
    layers += [ReLU(), AvgPool2D(2, padding="same"), Flatten(), Dense(3)]
    return Sequential(layers, dtype=dtype).build((9, 8, 2), seed=seed)


def data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 9, 8, 2)), rng.integers(0, 3, n)


def same_arrays(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_xpnn_trace_is_the_function_and_the_module_still_imports(tmp_path):
    module = importlib.import_module("xpnn.trace")
    assert xpnn.trace is module.trace and callable(xpnn.trace)
    assert TraceRecorder(tmp_path / "a.h5").record and not TraceRecorder(tmp_path / "b.h5", layers=False).record


def test_trace_leaves_weights_and_matches_the_forward_pass():
    model = small_model()
    x, y = data()
    before = model.get_weights()
    t = xpnn.trace(model, x, y)
    assert same_arrays(before, model.get_weights())
    assert len(t.outputs) == len(t.input_grads) == len(model.layers)
    assert [g.shape for g in t.grads] == [w.shape for w in before]
    assert all(isinstance(a, np.ndarray) for a in [*t.outputs, *t.grads, *t.input_grads])
    np.testing.assert_array_equal(t.outputs[-1], model.predict(x))
    np.testing.assert_array_equal(t.logits, t.outputs[-1])
    for i in range(1, len(model.layers)):
        assert t.input_grads[i].shape == t.outputs[i - 1].shape
    assert t.input_grads[0].shape == x.shape
    expected_cost, _ = softmax_cross_entropy(t.logits, np.eye(3)[y])
    assert t.cost == pytest.approx(float(expected_cost), rel=1e-15)


def test_trace_gradients_are_central_differences():
    """The recorded dW and dL/dx of the first layer equal numerical derivatives of the cost (float64)."""
    model = small_model()
    x, y = data(n=3)

    def cost():
        return xpnn.trace(model, x, y).cost

    t = xpnn.trace(model, x, y)
    np.testing.assert_allclose(t.input_grads[0], numeric_grad(cost, x), rtol=1e-6, atol=1e-9)
    w0 = model.layers[0].params["w"]
    np.testing.assert_allclose(t.grads[0], numeric_grad(cost, w0), rtol=1e-6, atol=1e-9)


def test_fit_trace_records_every_step(tmp_path):
    model = small_model()
    x, y = data(n=10)
    start = model.get_weights()
    probe = small_model()
    probe.set_weights(start)
    path = tmp_path / "run.h5"
    model.fit(x, y, epochs=2, batch_size=4, optimizer=Adam(0.01), seed=3, verbose=0, trace=str(path))
    run = read_trace(path)
    assert len(run.steps) == 2 * 3 and run.attrs["steps"] == 6
    assert [(s.epoch, s.index) for s in run.steps] == [(e, i) for e in (1, 2) for i in (1, 2, 3)]
    assert same_arrays(run.initial_weights, start)
    first = run.steps[0]
    expected = xpnn.trace(probe, x[first.indices], y[first.indices])
    assert same_arrays(first.grads, expected.grads)
    assert same_arrays(first.outputs, expected.outputs)
    assert same_arrays(first.input_grads, expected.input_grads)
    assert float(first.cost) == expected.cost
    assert same_arrays(run.steps[-1].weights, model.get_weights())
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_fit_trace_steps_chain_weights(tmp_path):
    """Step k's weights are the weights that step k+1's pass saw: replaying its batch gives its gradients."""
    model = small_model()
    x, y = data(n=8)
    path = tmp_path / "run.h5"
    model.fit(x, y, epochs=1, batch_size=4, optimizer=SGD(0.1), seed=0, verbose=0, trace=path)
    first, second = read_trace(path).steps
    replay = small_model()
    replay.set_weights(first.weights)
    assert same_arrays(xpnn.trace(replay, x[second.indices], y[second.indices]).grads, second.grads)


def test_trace_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "run.h5"
    seen = []

    class Probe(Callback):
        def on_batch_end(self, model, state, batch):
            seen.append(path.exists())

    x, y = data(n=8)
    small_model().fit(x, y, epochs=1, batch_size=4, verbose=0, callbacks=[Probe()], trace=path)
    assert seen == [False, False] and path.exists()


def test_train_on_batch_trace_one_step(tmp_path):
    model = small_model()
    x, y = data(n=5)
    expected = xpnn.trace(model, x, y)
    path = tmp_path / "step.h5"
    cost = model.train_on_batch(x, y, optimizer=SGD(0.05), trace=path)
    (step,) = read_trace(path).steps
    assert cost == expected.cost == float(step.cost)
    assert same_arrays(step.grads, expected.grads)
    assert same_arrays(step.weights, model.get_weights())
    assert not same_arrays(step.weights, read_trace(path).initial_weights)


def test_recorder_across_train_on_batch_calls(tmp_path):
    model = small_model()
    x, y = data(n=6)
    path = tmp_path / "run.h5"
    after = []
    with TraceRecorder(path, layers=False) as rec:
        for i in range(3):
            model.train_on_batch(x[2 * i : 2 * i + 2], y[2 * i : 2 * i + 2], optimizer="adam", trace=rec)
            after.append(model.get_weights())
        assert not path.exists()
    run = read_trace(path)
    assert len(run.steps) == 3
    for step, weights in zip(run.steps, after):
        assert same_arrays(step.weights, weights)
        assert step.outputs == [] and step.input_grads == []


@pytest.mark.parametrize("bad", [3, ["a.h5"]])
def test_trace_argument_must_be_a_path_or_recorder(bad):
    x, y = data(n=2)
    with pytest.raises(TypeError, match="trace must be a file path"):
        small_model().train_on_batch(x, y, trace=bad)


def test_trace_path_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="is a folder"):
        TraceRecorder(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        TraceRecorder(tmp_path / "missing" / "run.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not an xpnn trace"):
        read_trace(other)
