"""The parts of issues 14 and 15 that meet in the model and the loop: weight penalties in the cost and the
gradient, a Dropout stream that resumes exactly, Keras callbacks resumed from a run folder's checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.regularizers import L1L2


def _pair(reg):
    plain = xpnn.Sequential([xpnn.Flatten(), xpnn.Dense(3)], dtype="float64").build((4, 4, 1), seed=2)
    penalised = xpnn.Sequential([xpnn.Flatten(), xpnn.Dense(3, kernel_regularizer=reg, bias_regularizer=reg)],
                                dtype="float64").build((4, 4, 1), seed=2)  # fmt: skip
    return plain, penalised


def test_regularizers_join_the_reported_loss_and_the_gradient():
    reg = L1L2(l1=0.01, l2=0.1)
    plain, penalised = _pair(reg)
    rng = np.random.default_rng(0)
    w = [rng.standard_normal(a.shape) for a in plain.get_weights()]
    plain.set_weights(w)
    penalised.set_weights(w)
    x, y = rng.random((5, 4, 4, 1)), np.array([0, 1, 2, 1, 0])
    a, b = xpnn.trace(plain, x, y), xpnn.trace(penalised, x, y)
    penalty = sum(float(reg(v)) for v in w)
    assert b.cost == pytest.approx(a.cost + penalty, rel=1e-14)
    l1, l2 = float(np.float32(0.01)), float(np.float32(0.1))  # Keras's L1L2 keeps its factors as float32
    for ga, gb, v in zip(a.grads, b.grads, w):
        np.testing.assert_allclose(gb, ga + l1 * np.sign(v) + 2 * l2 * v, rtol=1e-13, atol=1e-15)
    h = penalised.fit(x, y, epochs=1, batch_size=5, optimizer="sgd", verbose=0)
    assert h.history["loss"][0] == pytest.approx(b.cost, rel=1e-12)  # Keras reports the penalised loss


def test_a_killed_run_with_dropout_and_early_stopping_resumes_bit_identically(tmp_path):
    """The run folder's checkpoint keeps Dropout's stream and the callbacks' state: 2 + 2 epochs == 4 epochs."""
    (x, y), (xt, yt) = xpnn.datasets.load_embedded(n_train=32, n_test=8)

    def model():
        layers = [xpnn.Conv2D(4, 3, padding="same", activation="relu"), xpnn.MaxPool2D(4, strides=4),
                  xpnn.Flatten(), xpnn.Dropout(0.3), xpnn.BatchNormalization(), xpnn.Dense(6)]  # fmt: skip
        return xpnn.Sequential(layers, dtype="float64").build((64, 64, 3), seed=3)

    def fit(m, epochs, run_dir, resume=False):
        stop = xpnn.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
        return m.fit(x, y, epochs=epochs, batch_size=8, optimizer=xpnn.Adam(0.01), validation_data=(xt, yt),
                     verbose=0, run_dir=run_dir, resume=resume, callbacks=[stop]), stop  # fmt: skip

    straight, stop_a = fit(model(), 4, tmp_path / "a")
    first = model()
    fit(first, 2, tmp_path / "b")
    (folder,) = (tmp_path / "b").iterdir()
    resumed_model = model()
    resumed, stop_b = fit(resumed_model, 4, folder, resume=True)
    assert resumed.history["loss"] == straight.history["loss"]
    assert stop_b.get_state()["best"] == stop_a.get_state()["best"]
    a_model = model()
    a_model.set_weights(xpnn.load_model(next((tmp_path / "a").iterdir()) / "model.h5").get_weights())
    for u, v in zip(resumed_model.get_weights(), a_model.get_weights()):
        np.testing.assert_array_equal(u, v)
