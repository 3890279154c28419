"""The CuPy stand-in enforces CuPy's rules, and the public API runs through it without per-step host syncs.

These tests run in the CPU lane: the `standin` fixture installs tests/cupy_standin.py as `cupy` for one test.
"""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.reference import reference_model, reference_optimizer
from xpnn.training import Callback


# ---- the stand-in itself ------------------------------------------------------------------------------------
def test_device_arrays_refuse_implicit_host_conversion(standin):
    cp = standin.modules()["cupy"]
    a = cp.arange(6, dtype=np.float64).reshape(2, 3)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="Unsupported type"):
        a + np.ones((2, 3))
    with pytest.raises(TypeError, match="Unsupported type"):
        np.ones((2, 3)) * a
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.maximum(a, np.zeros(3))
    assert isinstance(a.sum(), cp.ndarray) and a.sum().shape == ()  # reductions stay on the device
    np.testing.assert_array_equal(cp.asnumpy(a), np.arange(6.0).reshape(2, 3))
    assert [e.kind for e in standin.log.events] == ["get"]


def test_implicit_reads_are_counted_where_they_happen(standin, monkeypatch):
    cp = standin.modules()["cupy"]
    a = cp.ones(3)
    standin.log.clear()
    assert float(a.sum()) == 3.0 and bool(a.all()) and a.sum().item() == 3.0
    kinds = [e.kind for e in standin.log.events]
    assert kinds == ["implicit"] * 3
    assert all("test_cupy_standin.py" in e.where for e in standin.log.events)
    monkeypatch.setattr(standin, "strict", True)
    with pytest.raises(TypeError, match="implicit device-to-host read"):
        float(a.sum())


def test_indices_and_assigned_values_may_be_host_arrays_as_in_cupy(standin):
    cp = standin.modules()["cupy"]
    a = cp.zeros(4)
    a[np.array([1, 3])] = np.array([5.0, 7.0])
    np.testing.assert_array_equal(a.get(), [0, 5, 0, 7])
    assert [e.kind for e in standin.log.events] == ["upload", "upload", "get"]  # the index, the values; the read
    standin.log.clear()
    a[a > 4] = 1.0  # a boolean mask needs its count on the host
    assert [e.kind for e in standin.log.events] == ["mask"]


def test_elementwise_kernel_checks_types_and_shapes_and_runs_the_twin(standin):
    cp = standin.modules()["cupy"]
    from xpnn.backends import numpy_backend

    kernel = cp.ElementwiseKernel("T g, T learning_rate", "T w", "w -= g * learning_rate", "xpnn_sgd_update")
    w, g = cp.ones(3), cp.full(3, 2.0)
    kernel(g, 0.5, w)  # a Python scalar takes T from the arrays
    np.testing.assert_array_equal(w.get(), [0.0, 0.0, 0.0])
    with pytest.raises(TypeError, match="Type is mismatched"):
        kernel(g.astype(np.float32), np.float64(0.5), w.astype(np.float32))
    with pytest.raises(TypeError, match="Type is mismatched"):
        kernel(g, 0.5, cp.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match="Unsupported type"):
        kernel(np.ones(3), 0.5, w)
    with pytest.raises(ValueError, match="Out shape is mismatched"):
        kernel(g, 0.5, cp.ones(4))
    relu_grad = cp.ElementwiseKernel("T dout, T out", "T dx", "dx = dout * (T)(out > 0)", "xpnn_relu_grad")
    dout, out = np.array([1.0, -2.0, 3.0]), np.array([1.0, 0.0, -1.0])
    dx = relu_grad(cp.asarray(dout), cp.asarray(out))
    np.testing.assert_array_equal(dx.get(), numpy_backend.relu_grad(dout, out))
    with pytest.raises(NotImplementedError, match="twin"):
        cp.ElementwiseKernel("T x", "T y", "y = x", "xpnn_no_such_kernel")(cp.ones(1))


def test_cupy_backend_runs_on_the_standin(standin):
    backend = xpnn.set_backend("cupy")
    assert backend.xp is standin.modules()["cupy"]
    x = backend.asarray(np.ones((2, 2)))
    assert isinstance(x, standin.ndarray) and backend.is_array(x)
    np.testing.assert_array_equal(backend.to_host(x), np.ones((2, 2)))


# ---- the public API through the stand-in, no host sync inside an epoch's steps -----------------------------
class StepSyncs(Callback):
    """The stand-in's log between each epoch's start and the end of its last step."""

    def __init__(self, log) -> None:
        self.log, self.per_epoch, self._start, self._end = log, [], 0, 0

    def on_epoch_begin(self, model, state) -> None:
        self._start = self._end = self.log.mark()

    def on_batch_end(self, model, state, batch) -> None:
        self._end = self.log.mark()

    def on_epoch_end(self, model, state, logs) -> None:
        self.per_epoch.append(self.log.events[self._start : self._end])


class Interrupted(Exception):
    pass


class Interrupt(Callback):
    """Ends fit with `Interrupted` when epoch `after` + 1 begins (its checkpoint is written by then)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_epoch_begin(self, model, state) -> None:
        if state.epoch == self.after:
            raise Interrupted


def _signs_like(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 64, 64, 3)).astype(np.uint8), rng.integers(0, 6, n)


def _assert_no_step_syncs(watch: StepSyncs) -> None:
    for epoch, events in enumerate(watch.per_epoch, start=1):
        syncs = [f"{e.kind} at {e.where}" for e in events if e.kind != "upload"]
        assert not syncs, f"epoch {epoch}: host synchronisations inside the steps: {syncs}"
        uploads = [e.where for e in events if e.kind == "upload"]
        assert len(uploads) <= 1, f"epoch {epoch}: more than the batch order uploaded: {uploads}"


def test_fit_evaluate_predict_save_resume_through_the_standin(standin, tmp_path):
    """The headline run (`XPNN_BACKEND=cupy`) on the stand-in equals NumPy, and its steps never wait on the host."""
    (x, y), (xv, yv) = _signs_like(40, 0), _signs_like(12, 1)
    fit_args = dict(batch_size=16, seed=2, verbose=0, validation_data=(xv, yv))

    def after_fit(model):
        model.save(tmp_path / "model.h5")
        loaded = xpnn.load_model(tmp_path / "model.h5")
        return model.predict(xv), model.evaluate(xv, yv), loaded, loaded.train_on_batch(x[:8], y[:8])

    xpnn.set_backend("numpy")
    cpu = reference_model("float64", seed=5)
    cpu_history = cpu.fit(x, y, epochs=3, optimizer=reference_optimizer(), **fit_args)
    cpu_logits, cpu_scores, _, cpu_cost = after_fit(cpu)

    xpnn.set_backend("cupy")
    model = reference_model("float64", seed=5)
    watch, runs = StepSyncs(standin.log), tmp_path / "runs"
    with pytest.raises(Interrupted):
        model.fit(
            x, y, epochs=3, optimizer=reference_optimizer(), callbacks=[watch, Interrupt(2)], run_dir=runs, **fit_args
        )
    (folder,) = runs.iterdir()
    model = reference_model("float64", seed=5)  # a fresh process's model and optimizer, resumed from the run folder
    history = model.fit(
        x, y, epochs=3, optimizer=reference_optimizer(), callbacks=[watch], run_dir=folder, resume=True, **fit_args
    )
    assert len(watch.per_epoch) == 3
    _assert_no_step_syncs(watch)
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(history.history[key], cpu_history.history[key], rtol=1e-10)
    for a, b in zip(model.get_weights(), cpu.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    logits, scores, loaded, cost = after_fit(model)
    assert isinstance(logits, np.ndarray) and isinstance(loaded.parameters()[0], standin.ndarray)
    np.testing.assert_allclose(logits, cpu_logits, rtol=1e-10, atol=1e-12)
    assert scores["loss"] == pytest.approx(cpu_scores["loss"], rel=1e-10)
    assert scores["accuracy"] == cpu_scores["accuracy"]
    assert cost == pytest.approx(cpu_cost, rel=1e-10)


def test_progress_bar_adds_no_host_sync_per_step(standin):
    """Issue 19 defect 7: the bar reads the running loss from the device at most every `interval` seconds."""
    import io

    from xpnn.callbacks import ProgressBar

    xpnn.set_backend("cupy")
    x, y = _signs_like(48, 0)
    watch = StepSyncs(standin.log)
    model = reference_model("float32", seed=5)
    bar = ProgressBar(1, 3, file=io.StringIO())
    model.fit(x, y, epochs=1, batch_size=16, optimizer=reference_optimizer(), verbose=0, callbacks=[bar, watch])
    _assert_no_step_syncs(watch)


def test_arrays_live_on_the_device_that_was_current(standin, monkeypatch):
    """Two GPUs: an array made on GPU 0 cannot meet work on GPU 1 (CuPy without peer access)."""
    cp = standin.modules()["cupy"]
    monkeypatch.setattr(standin, "device_count", 2)
    monkeypatch.setattr(standin, "_current_device", 0)
    a = cp.ones(3)
    cp.cuda.Device(1).use()
    b = cp.ones(3)
    assert (a.device.id, b.device.id) == (0, 1)
    with pytest.raises(ValueError, match=r"resides \(0\) is different from the current device \(1\)"):
        a + b
    with pytest.raises(ValueError, match="different from the current device"):
        cp.exp(a)
