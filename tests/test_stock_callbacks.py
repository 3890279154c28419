"""The stock callbacks: Keras semantics (patience, best weights, file names, LR changes) and exact resumes."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest

from xpnn import SGD, Dense, Sequential, load_model
from xpnn.callbacks import (
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
    read_weights,
)
from xpnn.train import Batch, Callback, TrainState


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, n)


def tiny(lr=0.1) -> Sequential:
    model = Sequential([Dense(3)], dtype="float64")
    model.compile(optimizer=SGD(lr))
    return model


def fit(model, callbacks, epochs=6, validation=True, **kwargs):
    x, y = data()
    val = (x[:10], y[:10]) if validation else None
    return model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks, validation_data=val, **kwargs)


class FakeModel:
    """What a monitor callback touches: weights, an optimizer and the stop flag."""

    def __init__(self, lr=1.0):
        self.optimizer = SGD(lr)
        self.stop_training = False
        self.weights = [np.zeros(2)]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]


def drive(cb, values, model=None, monitor="val_loss", start=0, state=None):
    """Run on_epoch_end over logged `values`; returns the epochs (from 1) after which training was stopped."""
    model = model or FakeModel()
    state = state or TrainState(epoch=start)
    stops = []
    for value in values:
        state.epoch += 1
        model.weights = [np.full(2, float(state.epoch))]
        cb.on_epoch_end(model, state, {monitor: value})
        if model.stop_training:
            stops.append(state.epoch)
            model.stop_training = False
    return stops


# ---- EarlyStopping -----------------------------------------------------------------------------------
def test_early_stopping_counts_patience_as_keras():
    # best at epoch 2 (0.5); 3 epochs without improvement reach patience 3 after epoch 5.
    cb = EarlyStopping(patience=3)
    cb.on_train_begin(FakeModel(), TrainState())
    assert drive(cb, [1.0, 0.5, 0.6, 0.5, 0.7, 0.8]) == [5, 6]
    assert cb.stopped_epoch == 5 and cb.best == 0.5 and cb.best_epoch == 1


def test_early_stopping_min_delta_mode_and_baseline():
    cb = EarlyStopping(monitor="val_accuracy", min_delta=0.1, patience=1)
    assert cb.mode == "max"
    assert drive(cb, [0.5, 0.55, 0.7], monitor="val_accuracy") == [2]  # +0.05 is below min_delta
    # improvements that miss the baseline do not restart the wait
    assert drive(EarlyStopping(patience=2, baseline=0.3), [0.9, 0.8, 0.85, 0.86]) == [3, 4]
    assert drive(EarlyStopping(patience=2), [0.9, 0.8, 0.85, 0.86]) == [4]
    cb = EarlyStopping(patience=0, start_from_epoch=2)
    assert drive(cb, [1.0, 2.0, 3.0, 4.0]) == [4]


def test_early_stopping_ends_fit_and_restores_best_weights():
    # loss goes down every epoch; monitoring it in "max" mode makes epoch 1 the best and stops at patience.
    model = tiny()
    cb = EarlyStopping(monitor="loss", mode="max", patience=2, restore_best_weights=True)
    history = fit(model, [cb], epochs=10)
    assert history.epoch == [1, 2, 3] and cb.stopped_epoch == 2
    reference = tiny()
    fit(reference, [], epochs=1)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_monitor_that_is_never_logged_warns_once():
    cb = EarlyStopping(monitor="val_loss", patience=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(tiny(), [cb], epochs=3, validation=False)
    assert len(history.epoch) == 3
    messages = [str(w.message) for w in caught if "val_loss" in str(w.message)]
    assert len(messages) == 1 and "not logged" in messages[0]


def test_monitor_direction_must_be_known():
    with pytest.raises(ValueError, match="mode='max' or mode='min'"):
        EarlyStopping(monitor="val_f1")
    with pytest.raises(ValueError, match="mode must be"):
        ReduceLROnPlateau(mode="up")


def test_early_stopping_state_resumes_exactly():
    values = [1.0, 0.7, 0.8, 0.65, 0.9, 0.95, 0.6, 0.99, 0.98]
    whole = EarlyStopping(patience=2, min_delta=0.01, restore_best_weights=True)
    whole.on_train_begin(FakeModel(), TrainState())
    stops_whole = drive(whole, values)
    first = EarlyStopping(patience=2, min_delta=0.01, restore_best_weights=True)
    first.on_train_begin(FakeModel(), TrainState())
    stops = drive(first, values[:4])
    saved = first.get_state()
    arrays = saved.pop("arrays")
    saved = json.loads(json.dumps(saved))  # JSON-friendly apart from the arrays
    second = EarlyStopping(patience=2, min_delta=0.01, restore_best_weights=True)
    second.set_state({**saved, "arrays": arrays})
    second.on_train_begin(FakeModel(), TrainState())  # a restored state survives train begin
    stops += drive(second, values[4:], start=4)
    assert stops == stops_whole
    assert (second.wait, second.best, second.best_epoch) == (whole.wait, whole.best, whole.best_epoch)
    np.testing.assert_array_equal(second.best_weights[0], whole.best_weights[0])


# ---- ModelCheckpoint ---------------------------------------------------------------------------------
def test_model_checkpoint_names_files_from_epoch_and_logs(tmp_path):
    model = tiny()
    history = fit(model, [ModelCheckpoint(tmp_path / "ck-{epoch:02d}-{val_loss:.2f}.h5")], epochs=3)
    expected = {f"ck-{e:02d}-{v:.2f}.h5" for e, v in zip(history.epoch, history.history["val_loss"])}
    assert {p.name for p in tmp_path.iterdir()} == expected
    last = load_model(tmp_path / f"ck-03-{history.history['val_loss'][-1]:.2f}.h5")
    for a, b in zip(last.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert last.optimizer.get_config() == model.optimizer.get_config()


def test_model_checkpoint_best_only_and_weights_only(tmp_path):
    seen = []

    class Record(Callback):
        def on_epoch_end(self, model, state, logs):
            seen.append((logs["loss"], model.get_weights()))

    model = tiny()
    cb = ModelCheckpoint(
        tmp_path / "best.weights.h5", monitor="loss", mode="max", save_weights_only=True, save_best_only=True
    )
    fit(model, [Record(), cb], epochs=4)
    best = max(range(len(seen)), key=lambda i: seen[i][0])
    for a, b in zip(read_weights(tmp_path / "best.weights.h5"), seen[best][1]):
        np.testing.assert_array_equal(a, b)
    assert cb.best == seen[best][0]


def test_model_checkpoint_checks_its_filepath(tmp_path):
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        ModelCheckpoint(tmp_path / "w.h5", save_weights_only=True)
    with pytest.raises(ValueError, match=r"must end in \.h5"):
        ModelCheckpoint(tmp_path / "model.keras")
    with pytest.raises(KeyError, match="val_acc.*not logged"):
        fit(tiny(), [ModelCheckpoint(tmp_path / "m-{val_acc:.2f}.h5")], epochs=1)


# ---- learning-rate callbacks -------------------------------------------------------------------------
class LearningRates(Callback):
    """The rate each epoch's batches ran with."""

    def __init__(self):
        self.rates = []

    def on_batch_end(self, model, state, batch):
        if batch.index == 0:
            self.rates.append(model.optimizer.learning_rate)


def test_learning_rate_scheduler_sets_the_rate_before_each_epoch():
    seen = LearningRates()
    model = tiny(0.1)
    history = fit(model, [LearningRateScheduler(lambda epoch, lr: lr if epoch < 2 else lr * 0.5), seen], epochs=4)
    assert seen.rates == [0.1, 0.1, 0.05, 0.025]
    assert model.optimizer.learning_rate == 0.025
    assert len(history.epoch) == 4
    one_arg = LearningRates()
    fit(tiny(0.1), [LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1)), one_arg], epochs=3)
    assert one_arg.rates == pytest.approx([0.01, 0.02, 0.03])


def test_learning_rate_scheduler_refuses_bad_rates():
    with pytest.raises(ValueError, match="returned nan at epoch 0"):
        fit(tiny(), [LearningRateScheduler(lambda epoch, lr: float("nan"))], epochs=1)
    with pytest.raises(ValueError, match="must return a number"):
        fit(tiny(), [LearningRateScheduler(lambda epoch, lr: "0.1")], epochs=1)


def test_reduce_lr_on_plateau_as_keras():
    model = FakeModel(lr=1.0)
    cb = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.2, min_delta=0.0)
    rates, logged = [], []
    for value in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]:
        logs = {"val_loss": value}
        cb.on_epoch_end(model, TrainState(), logs)
        rates.append(model.optimizer.learning_rate)
        logged.append(logs["learning_rate"])
    # Keras's count: 2 epochs without improvement halve the rate; the cooldown epoch zeroes the wait but
    # counts itself; an improvement (0.5) restarts the wait; min_lr is a floor.
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2]
    assert logged == [1.0, *rates[:-1]]


def test_reduce_lr_on_plateau_in_fit_and_through_a_saved_model(tmp_path):
    model = tiny(0.1)
    fit(model, [ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=1)], epochs=3)
    assert model.optimizer.learning_rate == pytest.approx(0.025)
    model.save(tmp_path / "m.h5")
    assert load_model(tmp_path / "m.h5").optimizer.learning_rate == model.optimizer.learning_rate


def test_reduce_lr_on_plateau_state_round_trip():
    values = [1.0, 1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8]
    whole_model, whole = FakeModel(), ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1)
    for v in values:
        whole.on_epoch_end(whole_model, TrainState(), {"val_loss": v})
    model, first = FakeModel(), ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1)
    for v in values[:4]:
        first.on_epoch_end(model, TrainState(), {"val_loss": v})
    second = ReduceLROnPlateau(factor=0.5, patience=1, cooldown=1)
    second.set_state(json.loads(json.dumps(first.get_state())))
    second.on_train_begin(model, TrainState())
    for v in values[4:]:
        second.on_epoch_end(model, TrainState(), {"val_loss": v})
    assert model.optimizer.learning_rate == whole_model.optimizer.learning_rate
    assert second.get_state() == whole.get_state()


# ---- CSVLogger and TerminateOnNaN --------------------------------------------------------------------
def test_csv_logger_writes_a_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    history = fit(tiny(), [CSVLogger(path)], epochs=3)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    for key in ("loss", "val_loss", "accuracy"):
        assert [float(r[key]) for r in rows] == history.history[key]
    fit(tiny(), [CSVLogger(path, append=True)], epochs=2)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 3 + 2 and lines[0].startswith("epoch,")
    fit(tiny(), [CSVLogger(path, separator=";")], epochs=1)
    assert len(path.read_text().splitlines()) == 2 and ";" in path.read_text()


def test_csv_logger_without_validation_writes_na_columns_as_keras(tmp_path):
    path = tmp_path / "log.csv"
    fit(tiny(), [CSVLogger(path)], epochs=1, validation=False)
    row = next(csv.DictReader(path.open()))
    assert row["val_loss"] == "NA"


def test_csv_logger_resume_cuts_rows_after_its_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    logger = CSVLogger(path)
    state = TrainState()
    logger.on_train_begin(None, state)
    for epoch in (1, 2):
        state.epoch = epoch
        logger.on_epoch_end(None, state, {"loss": 1.0 / epoch})
    saved = json.loads(json.dumps(logger.get_state()))
    state.epoch = 3
    logger.on_epoch_end(None, state, {"loss": 1.0 / 3})  # written, then the run dies before its checkpoint
    resumed = CSVLogger(path)
    resumed.set_state(saved)
    resumed.on_train_begin(None, TrainState(epoch=2))
    state.epoch = 3
    resumed.on_epoch_end(None, state, {"loss": 0.25})
    rows = list(csv.DictReader(path.open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"] and rows[-1]["loss"] == "0.25"


def test_terminate_on_nan_stops_after_the_batch(capsys):
    model, state, cb = FakeModel(), TrainState(), TerminateOnNaN()

    class Result:
        cost = np.float64(1.0)

    batch = Batch(1, 0, np.arange(2), None, None, Result())
    cb.on_batch_end(model, state, batch)
    assert not model.stop_training
    Result.cost = np.float64(np.nan)
    cb.on_batch_end(model, state, Batch(1, 3, np.arange(2), None, None, Result()))
    assert model.stop_training and state.stop
    assert "Batch 3: Invalid loss, terminating training" in capsys.readouterr().out


def test_stateless_callbacks_have_no_state():
    assert TerminateOnNaN().get_state() is None
    assert LearningRateScheduler(lambda epoch: 0.1).get_state() is None
