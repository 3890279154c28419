"""fit's Keras arguments: validation_split, initial_epoch, stop_training, and the batch-order stream across fits."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.reference import reference_model, reference_optimizer


@pytest.fixture(scope="module")
def data():
    return xpnn.datasets.load_embedded(n_train=40, n_test=8)


def test_validation_split_holds_out_the_last_samples_before_shuffling(data):
    (x, y), _ = data
    a, b = reference_model("float64", seed=1), reference_model("float64", seed=1)
    ha = a.fit(x, y, epochs=2, batch_size=16, optimizer=reference_optimizer(), verbose=0, validation_split=0.25)
    hb = b.fit(x[:30], y[:30], epochs=2, batch_size=16, optimizer=reference_optimizer(), verbose=0,
               validation_data=(x[30:], y[30:]))  # fmt: skip
    assert ha.history["val_loss"] == hb.history["val_loss"] and ha.history["loss"] == hb.history["loss"]
    with pytest.raises(ValueError, match=r"validation_split must be a fraction in \[0, 1\); got validation_split=1.5"):
        a.fit(x, y, verbose=0, validation_split=1.5)
    with pytest.raises(ValueError, match="leaves 0 to train on"):
        a.fit(x[:1], y[:1], verbose=0, validation_split=0.5)


def test_repeated_fits_continue_the_batch_order_stream(data):
    (x, y), _ = data
    opt_a, opt_b = reference_optimizer(), reference_optimizer()
    once, twice = reference_model("float64", seed=1), reference_model("float64", seed=1)
    h = once.fit(x, y, epochs=3, batch_size=16, optimizer=opt_a, seed=5, verbose=0)
    losses = [twice.fit(x, y, epochs=1, batch_size=16, optimizer=opt_b, seed=5, verbose=0).history["loss"][0]
              for _ in range(3)]  # fmt: skip
    assert losses == h.history["loss"]
    for u, v in zip(once.get_weights(), twice.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_initial_epoch_starts_the_count_there(data):
    (x, y), _ = data
    h = reference_model(seed=1).fit(x, y, epochs=5, initial_epoch=3, batch_size=16, verbose=0)
    assert h.epoch == [4, 5]


def test_stop_training_from_a_callback_ends_after_the_batch(data):
    (x, y), _ = data
    steps = []

    class StopAtStep3(xpnn.training.Callback):
        def on_batch_end(self, model, state, batch):
            steps.append(state.step)
            if state.step == 3:
                model.stop_training = True

    h = reference_model(seed=1).fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[StopAtStep3()])
    assert steps == [1, 2, 3] and h.epoch == [1]  # 3 steps make one epoch of 40 at 16: it still closes the epoch
    steps.clear()
    h = reference_model(seed=1).fit(x, y, epochs=4, batch_size=8, verbose=0, callbacks=[StopAtStep3()])
    assert steps == [1, 2, 3] and h.epoch == [1]  # stopped mid-epoch: the epoch's logs cover the 24 samples seen


class Batches(xpnn.datasets.PyDataset):
    """The first n samples in batches of 16, in order (a stand-in for data read from disk batch by batch)."""

    def __init__(self, x, y, size=16):
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        return self.x[i * self.size : (i + 1) * self.size], self.y[i * self.size : (i + 1) * self.size]


def test_a_batch_source_trains_as_the_same_batches_from_arrays(data):
    """Issue 17: fit/evaluate/predict read a PyDataset or a generator batch by batch; same batches, same run."""
    (x, y), (xt, yt) = data
    kwargs = {"epochs": 2, "optimizer": "adam", "verbose": 0, "shuffle": "sequential"}
    arrays = reference_model("float64", seed=1)
    h_arrays = arrays.fit(x, y, batch_size=16, validation_data=(xt, yt), **kwargs)
    source = reference_model("float64", seed=1)
    h_source = source.fit(Batches(x, y), validation_data=Batches(xt, yt), **kwargs)
    assert h_source.history == {**h_arrays.history, "seconds": h_source.history["seconds"]}
    for u, v in zip(arrays.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(u, v)

    def forever():
        while True:
            yield from (Batches(x, y)[i] for i in range(3))

    gen = reference_model("float64", seed=1)
    h_gen = gen.fit(forever(), steps_per_epoch=3, **kwargs)
    assert h_gen.history["loss"] == h_arrays.history["loss"]
    np.testing.assert_array_equal(source.predict(Batches(xt, yt)), source.predict(xt))
    assert source.evaluate(Batches(xt, yt))["loss"] == pytest.approx(source.evaluate(xt, yt)["loss"], rel=1e-12)
    with pytest.raises(ValueError, match="sample_weight and class_weight need"):
        gen.fit(Batches(x, y), sample_weight=np.ones(len(x)), verbose=0)
    with pytest.raises(ValueError, match="fit needs labels y with arrays x"):
        gen.fit(x, verbose=0)


def test_class_weight_is_sample_weight_by_label_and_bad_keys_are_named(data):
    (x, y), _ = data
    kwargs = {"epochs": 2, "batch_size": 16, "optimizer": "sgd", "verbose": 0, "seed": 3}
    by_class = reference_model("float64", seed=1).fit(x, y, class_weight={0: 2.0, 3: 0.5}, **kwargs)
    weights = np.where(y == 0, 2.0, np.where(y == 3, 0.5, 1.0))
    by_sample = reference_model("float64", seed=1).fit(x, y, sample_weight=weights, **kwargs)
    assert by_class.history["loss"] == by_sample.history["loss"]
    plain = reference_model("float64", seed=1).fit(x, y, **kwargs)
    assert plain.history["loss"] != by_class.history["loss"]
    with pytest.raises(ValueError, match=r"class_weight keys must be class indices 0\.\.5; got \[7\]"):
        reference_model(seed=1).fit(x, y, class_weight={7: 1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"sample_weight must be 40 numbers"):
        reference_model(seed=1).fit(x, y, sample_weight=np.ones(3), verbose=0)


def test_a_one_unit_sigmoid_model_reports_binary_accuracy_only_when_asked():
    """Issue 15: Dense(1) + binary loss reported accuracy 1.0 at chance; mse reported accuracy too."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 3)), rng.integers(0, 2, 64)
    model = xpnn.Sequential([xpnn.Dense(1)], dtype="float64")
    h = model.fit(x, y, epochs=1, loss=xpnn.losses.BinaryCrossentropy(from_logits=True), verbose=0, optimizer="sgd")
    assert set(h.history) == {"loss", "seconds"}
    h = model.fit(x, y, epochs=1, loss=xpnn.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"],
                  verbose=0, optimizer="sgd")  # fmt: skip
    logits = model.predict(x)[:, 0]
    assert 0.2 < h.history["accuracy"][0] < 0.8  # chance, not 1.0
    assert model.evaluate(x, y, loss=xpnn.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])[
        "accuracy"
    ] == pytest.approx(np.mean((logits > 0) == y))
    h = xpnn.Sequential([xpnn.Dense(1)]).fit(x, rng.standard_normal(64), loss="mse", verbose=0)
    assert "accuracy" not in h.history
