"""Sequential's public surface: build, weights, predict, train_on_batch, fit, evaluate."""

from __future__ import annotations

import re

import numpy as np
import pytest

import xpnn
from xpnn import SGD, Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from xpnn.reference import reference_model


def small_model(dtype="float64", seed=0):
    return Sequential([Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(2), Flatten(), Dense(3)], dtype=dtype).build(
        (8, 8, 2), seed=seed
    )


def data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8, 8, 2)), rng.integers(0, 3, n)


def test_build_creates_keras_layouts_and_glorot_limits():
    model = reference_model("float32", seed=1)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(4, 4, 3, 8), (8,), (2, 2, 8, 16), (16,), (64, 6), (6,)]
    w1 = model.get_weights()[0]
    limit = np.sqrt(6 / (4 * 4 * 3 + 4 * 4 * 8))
    assert np.abs(w1).max() <= limit and np.abs(w1).max() > 0.9 * limit
    assert all(w.dtype == np.float32 for w in model.get_weights())
    assert not model.get_weights()[1].any()


def test_same_seed_same_weights_other_seed_different():
    a, b, c = small_model(seed=1), small_model(seed=1), small_model(seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


def test_get_weights_returns_copies_and_set_weights_round_trips():
    model = small_model()
    ws = model.get_weights()
    ws[0][...] = 0.0
    assert model.get_weights()[0].any()
    new = [np.full(w.shape, 0.1) for w in ws]
    model.set_weights(new)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), new))


def test_train_on_batch_returns_pre_update_cost_and_updates():
    model = small_model()
    x, y = data()
    before = model.evaluate(x, y)["loss"]
    cost = model.train_on_batch(x, y, optimizer=SGD(0.1), loss="softmax_cross_entropy")
    assert cost == pytest.approx(before, rel=1e-12)
    assert model.evaluate(x, y)["loss"] < before


def test_train_on_batch_with_a_name_keeps_adam_state():
    model = small_model()
    x, y = data()
    model.train_on_batch(x, y, optimizer="adam")
    model.train_on_batch(x, y, optimizer="adam")
    assert model._named_optimizers["adam"].iterations == 2


def test_predict_chunks_agree_and_return_host_arrays():
    model = small_model()
    x, _ = data(n=7)
    full = model.predict(x)
    assert isinstance(full, np.ndarray) and full.shape == (7, 3)
    np.testing.assert_allclose(model.predict(x, batch_size=3), full, rtol=1e-13)


def test_uint8_images_are_scaled_to_unit_range():
    model = small_model()
    x = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 2)).astype(np.uint8)
    np.testing.assert_allclose(model.predict(x), model.predict(x.astype(np.float64) / 255.0), rtol=1e-13)


def test_integer_labels_equal_one_hot():
    x, y = data()
    a, b = small_model(), small_model()
    a.train_on_batch(x, y, optimizer=SGD(0.1))
    b.train_on_batch(x, np.eye(3)[y], optimizer=SGD(0.1))
    assert all(np.array_equal(p, q) for p, q in zip(a.get_weights(), b.get_weights()))


def test_fit_history_and_determinism():
    x, y = data(n=20)
    runs = []
    for _ in range(2):
        model = small_model()
        h = model.fit(x, y, epochs=3, batch_size=6, optimizer=Adam(0.01), seed=3, validation_data=data(8, 1), verbose=0)
        runs.append((h, model.get_weights()))
    h = runs[0][0]
    assert set(h.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    assert h.epoch == [1, 2, 3] and len(h.history["loss"]) == 3
    assert h.history["loss"] == runs[1][0].history["loss"]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_fit_one_epoch_equals_manual_train_on_batch_with_same_order():
    """fit's random order is a seeded permutation per epoch; the last partial batch is kept."""
    from xpnn.data.batches import epoch_batches

    x, y = data(n=13)
    fitted, manual = small_model(), small_model()
    h = fitted.fit(x, y, epochs=1, batch_size=5, optimizer=SGD(0.05), seed=4, verbose=0)
    batches = epoch_batches(13, 5, "random", np.random.default_rng(4))
    assert [len(b) for b in batches] == [5, 5, 3]
    costs = [manual.train_on_batch(x[b], y[b], optimizer=SGD(0.05)) for b in batches]
    assert all(np.array_equal(a, b) for a, b in zip(fitted.get_weights(), manual.get_weights()))
    assert h.history["loss"][0] == pytest.approx(sum(c * len(b) for c, b in zip(costs, batches)) / 13, rel=1e-12)


def test_sequential_order_uses_data_order():
    x, y = data(n=8)
    fitted, manual = small_model(), small_model()
    fitted.fit(x, y, epochs=1, batch_size=3, optimizer=SGD(0.05), shuffle="sequential", verbose=0)
    for i in range(0, 8, 3):
        manual.train_on_batch(x[i : i + 3], y[i : i + 3], optimizer=SGD(0.05))
    assert all(np.array_equal(a, b) for a, b in zip(fitted.get_weights(), manual.get_weights()))


def test_float32_model_computes_in_float32():
    model = small_model("float32")
    x, y = data()
    assert model.predict(x).dtype == np.float32
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert all(w.dtype == np.float32 for w in model.get_weights())


def test_evaluate_matches_predict():
    model = small_model()
    x, y = data(n=9)
    logits = model.predict(x)
    result = model.evaluate(x, y)
    assert result["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    cost, _ = xpnn.get_loss("softmax_cross_entropy")(logits, np.eye(3)[y])
    assert result["loss"] == pytest.approx(float(cost), rel=1e-12)


def test_unbuilt_model_builds_from_data_on_fit():
    model = Sequential([Flatten(), Dense(3)], dtype="float64")
    x, y = data()
    model.fit(x, y, epochs=1, batch_size=5, verbose=0)
    assert model.input_shape == (8, 8, 2)


# ---- Keras habits (issue 18) --------------------------------------------------------------------------
def test_build_accepts_a_leading_none_and_refuses_other_non_ints():
    from xpnn.reference import reference_layers

    a = xpnn.Sequential(reference_layers()).build((None, 64, 64, 3), seed=3)
    b = xpnn.Sequential(reference_layers()).build((64, 64, 3), seed=3)
    assert a.input_shape == (64, 64, 3)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    with pytest.raises(TypeError, match=r"input_shape must be ints without the batch axis"):
        xpnn.Sequential(reference_layers()).build((64, None, 3))


def test_summary_prints_and_returns_a_table_whose_columns_never_touch(capsys):
    from xpnn.reference import reference_model

    model = reference_model(seed=1)
    text = model.summary()
    assert capsys.readouterr().out.strip() == text.strip()
    assert model.summary(print_fn=None) == text and capsys.readouterr().out == ""
    rows = [line for line in text.splitlines() if line.startswith(("Conv2D", "Dense", "MaxPool2D"))]
    for row in rows:
        assert re.search(r"\)  +\(None, [\d, ]+\)  +[\d,]+$", row), row  # at least two spaces between columns
    assert f"Total params: {model.count_params():,}" in text and max(map(len, text.splitlines())) <= 80


def test_call_count_params_and_layer_weights():
    from xpnn.reference import reference_model

    model = reference_model("float64", seed=1)
    x = np.random.default_rng(0).random((3, 64, 64, 3))
    np.testing.assert_array_equal(np.asarray(model(x)), model.predict(x))
    assert model.count_params() == sum(w.size for w in model.get_weights())
    dense = model.layers[-1]
    w, b = dense.get_weights()
    dense.set_weights([w * 2, b + 1])
    np.testing.assert_array_equal(dense.get_weights()[0], w * 2)
    with pytest.raises(ValueError, match=r"Dense weight 'w' must have shape \(64, 6\); got \(6, 64\)"):
        dense.set_weights([w.T, b])
    with pytest.raises(TypeError, match="must be numbers; got an array of dtype <U"):
        dense.set_weights([w.astype(str), b])


def test_a_pass_releases_each_units_cache_after_its_backward():
    """run_pass frees the activations a unit alone holds once its backward has run (peak memory); a caller's own
    backward keeps its caches unless it asks for release."""
    model = xpnn.Sequential([xpnn.Dense(8), xpnn.ReLU(), xpnn.Dense(3)], dtype="float64").build((5,), seed=0)
    rng = np.random.default_rng(0)
    xb, yb = model._prepare(rng.standard_normal((4, 5)), rng.integers(0, 3, 4))
    loss = xpnn.get_loss("softmax_cross_entropy")
    logits, caches, _ = model.forward(xb, training=True)
    _, dlogits = loss(logits, yb)
    kept, _ = model.backward(dlogits, caches)
    assert all(c is not None for c in caches)
    released, _ = model.backward(dlogits, caches, release=True)
    assert all(c is None for c in caches)
    for a, b in zip(kept, released):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.run_pass(xb, yb, loss).grads[0], kept[0])
