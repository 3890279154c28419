"""Bad input gets a ValueError/TypeError that names the problem and the fix."""

from __future__ import annotations

import re
import sys
import types

import numpy as np
import pytest

import xpnn
from xpnn import SGD, Adam, AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, Sequential
from xpnn.reference import reference_model


def model():
    return Sequential([Conv2D(2, 3, padding="same"), Flatten(), Dense(3)], dtype="float64").build((6, 6, 3))


def xy(n=4):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 6, 6, 3)), rng.integers(0, 3, n)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Conv2D(0, 3), "filters=0"),
        (lambda: Conv2D(4, 0), "kernel_size"),
        (lambda: Conv2D(4, 3, strides=0), "strides.*positive"),
        (lambda: Conv2D(4, 3, strides=-2), "strides"),
        (lambda: MaxPool2D(2, strides=0), "strides"),
        (lambda: Conv2D(4, 3, padding="full"), "unknown padding 'full'.*'valid' or 'same'"),
        (lambda: AvgPool2D(2, padding="reflect"), "unknown padding"),
        (lambda: Dense(-1), "units=-1"),
        (lambda: Sequential([Dense(2)], dtype="float16"), "float32' or 'float64"),
        (lambda: Adam(learning_rate=-1.0), "learning_rate"),
        (lambda: xpnn.get_loss("softmax_crossentropy"), "unknown loss.*Did you mean 'softmax_cross_entropy'"),
        (lambda: xpnn.get_optimizer("adma"), "unknown optimizer 'adma'.*Did you mean 'adam'"),
        (lambda: xpnn.set_backend("jax"), "unknown backend 'jax'"),
    ],
)
def test_constructor_errors_name_the_problem(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_kernel_bigger_than_valid_input():
    with pytest.raises(ValueError, match=r"bigger than its VALID input 4x4.*padding='same'"):
        Sequential([Conv2D(2, 5)]).build((4, 4, 1))


def test_stack_that_shrinks_to_nothing():
    with pytest.raises(ValueError, match="bigger than its VALID input|too deep"):
        Sequential([Conv2D(2, 3), Conv2D(2, 3), Conv2D(2, 3)]).build((6, 6, 1))


def test_wrong_rank_and_channels():
    m = model()
    x, y = xy()
    with pytest.raises(ValueError, match=r"x has shape \(6, 6, 3\).*x\[None\]"):
        m.predict(x[0])
    with pytest.raises(ValueError, match=r"shape \(4, 6, 6, 1\).*\(n, 6, 6, 3\)"):
        m.fit(x[..., :1], y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="NHWC"):
        Sequential([Conv2D(2, 3)]).build((6, 6))


def test_nan_and_inf_in_x():
    m = model()
    x, y = xy()
    x[1, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=r"x holds 1 NaN or Inf.*\(1, 2, 3, 0\)"):
        m.fit(x, y, epochs=1, verbose=0)
    for bad in (np.inf, -np.inf):
        x[1, 2, 3, 0] = bad
        with pytest.raises(ValueError, match=r"NaN or Inf.*\(1, 2, 3, 0\)"):
            m.train_on_batch(x, y, optimizer=SGD(0.1))


def test_a_non_finite_value_is_found_in_any_piece_of_a_large_strided_input(monkeypatch):
    """The CPU check runs piece by piece (xpnn.inputs.FINITE_CHUNK): the last sample of the last piece counts."""
    from xpnn import inputs

    monkeypatch.setattr(inputs, "FINITE_CHUNK", 200)  # 1 sample (108 values) per piece, 40 pieces
    m = model()
    x = np.random.default_rng(0).random((40, 6, 6, 3))
    x[39, 5, 0, 1] = -np.inf
    with pytest.raises(ValueError, match=r"x holds 1 NaN or Inf.*\(39, 5, 5, 1\)"):
        m.predict(x[:, :, ::-1])  # a strided view: the mirrored column
    assert m.predict(x[:39, :, ::-1]).shape == (39, 3)


def test_labels_out_of_range_and_length_mismatch():
    m = model()
    x, y = xy()
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\].*from 0 to 3"):
        m.fit(x, np.array([0, 1, 2, 3]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"from -1"):
        m.fit(x, np.array([0, 1, 2, -1]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="x has 4 samples but y has 3"):
        m.fit(x, y[:3], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"y has shape \(4, 5\)"):
        m.fit(x, np.zeros((4, 5)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y holds"):
        m.fit(x, np.full((4, 3), np.nan), epochs=1, verbose=0)


def test_bad_fit_arguments():
    m = model()
    x, y = xy()
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        m.fit(x, y, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="unknown shuffle"):
        m.fit(x, y, shuffle="sorted", verbose=0)
    with pytest.raises(TypeError, match="x must hold numbers"):
        m.predict(np.full((1, 6, 6, 3), "a"))


def test_set_weights_checks_count_and_shapes():
    m = reference_model("float64")
    ws = m.get_weights()
    with pytest.raises(ValueError, match="got 5 arrays but the model has 6"):
        m.set_weights(ws[:5])
    with pytest.raises(ValueError, match=r"must have shape \(4, 4, 3, 8\); got \(3, 3, 3, 8\)"):
        m.set_weights([np.zeros((3, 3, 3, 8))] + ws[1:])


def test_divergence_stops_with_epoch_and_step():
    m = model()
    x, y = xy(8)
    m.set_weights([w * 1e30 for w in m.get_weights()])
    expected = r"epoch 1, step \d.*Lower the learning rate"
    with np.errstate(all="ignore"), pytest.raises(xpnn.DivergedError, match=expected):
        m.fit(x * 1e300, y, epochs=2, batch_size=4, optimizer=SGD(1e30), verbose=0)


def test_cupy_without_cupy_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(ValueError, match=r"CuPy is not installed.*\.\[cuda12\].*XPNN_BACKEND=numpy"):
        xpnn.set_backend("cupy")


def test_cupy_without_a_gpu(monkeypatch):
    class NoDevice(Exception):
        pass

    def no_device():
        raise NoDevice("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(ValueError, match=r"no CUDA device is visible.*CUDA_VISIBLE_DEVICES"):
        xpnn.set_backend("cupy")


def test_backend_from_environment(monkeypatch):
    import xpnn.backends as backends

    monkeypatch.setattr(backends, "_active", None)
    monkeypatch.setenv("XPNN_BACKEND", "NumPy")
    assert xpnn.get_backend().name == "numpy"
    monkeypatch.setattr(backends, "_active", None)
    monkeypatch.setenv("XPNN_BACKEND", "tpu")
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        xpnn.get_backend()


def test_missing_signs_lists_where_it_looked(tmp_path):
    expected = rf"SIGNS not found .* in {re.escape(str(tmp_path))}\. Set XPNN_DATA.*load_embedded"
    with pytest.raises(FileNotFoundError, match=expected):
        xpnn.datasets.load_signs(tmp_path)
