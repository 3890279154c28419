"""The reference run learns: 25 epochs on SIGNS, and on the embedded stand-in."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn.reference import reference_model, reference_optimizer


@pytest.mark.slow
def test_reference_run_on_signs_learns(signs_folder):
    (x_train, y_train), (x_test, y_test) = xpnn.datasets.load_signs(signs_folder)
    model = reference_model("float32", seed=1)
    history = model.fit(x_train, y_train, epochs=25, batch_size=64, optimizer=reference_optimizer(), seed=1, verbose=0)
    assert history.history["loss"][0] > 1.5  # starts near ln 6
    assert history.history["loss"][-1] < 1.0
    assert model.evaluate(x_test, y_test)["accuracy"] > 0.5  # chance is 1/6


def test_embedded_set_trains():
    (x_train, y_train), (x_test, y_test) = xpnn.datasets.load_embedded(n_train=300, n_test=60)
    model = reference_model("float32", seed=1)
    before = model.evaluate(x_test, y_test)["accuracy"]
    history = model.fit(x_train, y_train, epochs=12, batch_size=32, optimizer=reference_optimizer(), verbose=0)
    assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
    after = model.evaluate(x_test, y_test)["accuracy"]
    assert after > 0.5 and after > before


def test_embedded_set_is_deterministic_and_balanced():
    (a, ya), _ = xpnn.datasets.load_embedded(n_train=60, n_test=6, seed=3)
    (b, yb), _ = xpnn.datasets.load_embedded(n_train=60, n_test=6, seed=3)
    assert a.dtype == np.uint8 and a.shape == (60, 64, 64, 3)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert np.bincount(ya).tolist() == [10] * 6
