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


def test_a_stopped_run_with_dropout_and_every_keras_callback_resumes_bit_identically(tmp_path):
    """The run folder's checkpoint keeps Dropout's stream, the learning rate the callbacks changed, and each
    callback's state (best value, waits, best weights, CSV rows): 2 + 2 epochs == 4 epochs, to the bit."""
    (x, y), (xt, yt) = xpnn.datasets.load_embedded(n_train=32, n_test=8)

    def model():
        layers = [xpnn.Conv2D(4, 3, padding="same", activation="relu"), xpnn.MaxPool2D(4, strides=4),
                  xpnn.Flatten(), xpnn.Dropout(0.3), xpnn.BatchNormalization(), xpnn.Dense(6)]  # fmt: skip
        return xpnn.Sequential(layers, dtype="float64").build((64, 64, 3), seed=3)

    def fit(m, epochs, run_dir, out, resume=False):
        cb = xpnn.callbacks
        out.mkdir(exist_ok=True)
        stop = cb.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
        every = [
            stop,
            cb.ModelCheckpoint(str(out / "best.h5"), monitor="val_loss", save_best_only=True),
            cb.LearningRateScheduler(lambda epoch, lr: lr * 0.9),
            cb.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0),  # fires every epoch
            cb.CSVLogger(str(out / "log.csv")),
            cb.TerminateOnNaN(),
        ]
        return m.fit(x, y, epochs=epochs, batch_size=8, optimizer=xpnn.Adam(0.01), validation_data=(xt, yt),
                     verbose=0, run_dir=run_dir, resume=resume, callbacks=every), stop  # fmt: skip

    straight, stop_a = fit(model(), 4, tmp_path / "a", tmp_path / "a-files")
    first = model()
    fit(first, 2, tmp_path / "b", tmp_path / "b-files")
    (folder,) = (tmp_path / "b").iterdir()
    resumed_model = model()
    resumed, stop_b = fit(resumed_model, 4, folder, tmp_path / "b-files", resume=True)
    assert resumed.history["loss"] == straight.history["loss"]
    assert stop_b.get_state()["best"] == stop_a.get_state()["best"]
    def rows(run):  # the CSV without its wall-clock column
        lines = [line.split(",") for line in (tmp_path / f"{run}-files" / "log.csv").read_text().splitlines()]
        drop = lines[0].index("seconds")
        return [row[:drop] + row[drop + 1 :] for row in lines]

    assert rows("a") == rows("b") and len(rows("a")) == 5
    a_model = model()
    a_model.set_weights(xpnn.load_model(next((tmp_path / "a").iterdir()) / "model.h5").get_weights())
    for u, v in zip(resumed_model.get_weights(), a_model.get_weights()):
        np.testing.assert_array_equal(u, v)
