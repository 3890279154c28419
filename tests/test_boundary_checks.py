"""Bad input that used to be opaque, silent or wrongly refused: each gives one clear line naming the fix."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import xpnn
from xpnn import Conv2D, Dense, Flatten, MaxPool2D, Sequential
from xpnn.backends import get_backend
from xpnn.data.messages import check_int_setting, check_run_config_data, setting_minimum
from xpnn.data.signs import signs_not_found
from xpnn.inputs import (
    check_batch_axis,
    check_output_finite,
    check_seed,
    check_weight_array,
    input_shape_from,
    prepare_x,
    prepare_y,
)


def conv_model(dtype="float32"):
    return Sequential([Conv2D(2, 3, padding="same"), MaxPool2D(2), Flatten(), Dense(3)], dtype=dtype).build((6, 6, 3))


def test_a_ragged_list_of_images_is_named_as_such():
    images = [np.zeros((6, 6, 3)), np.zeros((6, 6, 3)), np.zeros((5, 6, 3))]
    with pytest.raises(
        ValueError,
        match=r"x is a list of 3 samples of different shapes: item 0 has shape \(6, 6, 3\) "
        r"but item 2 has \(5, 6, 3\).*np\.stack\(x\)",
    ):
        conv_model().predict(images)
    objects = np.empty(3, dtype=object)
    objects[:] = images
    with pytest.raises(ValueError, match=r"item 2 has \(5, 6, 3\)"):
        conv_model().predict(objects)
    with pytest.raises(ValueError, match=r"x is a list of 3 samples of different shapes"):
        input_shape_from(images, conv_model().layers)  # before an unbuilt model builds itself
    assert conv_model().predict([np.zeros((6, 6, 3))] * 2).shape == (2, 3)  # a list of equal images is fine


def test_one_image_without_a_batch_axis_into_an_unbuilt_model():
    image = np.zeros((64, 64, 3))
    conv = [Conv2D(2, 3), Flatten(), Dense(6)]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "x has shape (64, 64, 3) but Conv2D takes NHWC images (n, h, w, c): "
            "one image without its batch axis? Use x[None] (shape (1, 64, 64, 3))"
        ),
    ):
        input_shape_from(image, conv)
    with pytest.raises(
        ValueError,
        match=r"a batch of grey images \(n, h, w\)\? Add a channel axis: x\[\.\.\., None\] "
        r"\(shape \(10, 28, 28, 1\)\); one image",
    ):
        input_shape_from(np.zeros((10, 28, 28)), conv)
    with pytest.raises(
        ValueError,
        match=r"like one image without its batch axis; the model is not built, so it would "
        r"take 64 samples of shape \(64, 3\)\. Use x\[None\]",
    ):
        input_shape_from(image, [Flatten(), Dense(6)])
    with pytest.raises(ValueError, match=r"x has shape \(5,\): one sample without its batch axis\? Use x\[None\]"):
        input_shape_from(np.zeros(5), [Dense(6)])
    assert input_shape_from(image[None], conv) == (64, 64, 3)
    assert input_shape_from(np.zeros((8, 20)), [Dense(6)]) == (20,)
    check_batch_axis((64, 64, 3), "Dense")  # Dense says itself that it needs a Flatten


def test_float64_beyond_float32_range_is_called_an_overflow():
    x = np.ones((2, 6, 6, 3))
    x[1, 2, 3, 0] = 1e39
    msg = (
        r"x holds 1 value\(s\) beyond float32's range \(±3.4e\+38\), the first 1e\+39 at index \(1, 2, 3, 0\): "
        r"they overflow to Inf in float32.*float64"
    )
    with pytest.raises(ValueError, match=msg):
        conv_model().predict(x)
    x[1, 2, 3, 0] = np.inf  # a real Inf is still called one
    with pytest.raises(ValueError, match=r"x holds 1 NaN or Inf value\(s\), the first at index \(1, 2, 3, 0\)"):
        conv_model().predict(x)
    x[1, 2, 3, 0] = 1e39
    assert np.isfinite(conv_model("float64").predict(x)).all()


def test_non_uint8_integer_images_warn_that_they_are_not_scaled():
    backend = get_backend()
    for dtype in (np.int64, np.uint16):
        x = np.full((2, 6, 6, 3), 200, dtype=dtype)
        with pytest.warns(
            UserWarning,
            match=rf"x holds {np.dtype(dtype)} images with values up to 200; only uint8 "
            r"images are scaled to \[0, 1\] \(Keras scales none\)",
        ):
            out = prepare_x(x, (6, 6, 3), np.dtype("float32"), backend)
        assert float(out.max()) == 200.0  # warned, not changed
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_x(np.full((2, 6, 6, 3), 200, np.uint8), (6, 6, 3), np.dtype("float32"), backend)  # scaled: no warning
        prepare_x(np.ones((2, 6, 6, 3), np.int64), (6, 6, 3), np.dtype("float32"), backend)  # 0/1 values: no warning
        prepare_x(np.full((2, 7), 9, np.int64), (7,), np.dtype("float32"), backend)  # not images


def test_float_labels_name_their_dtype():
    backend = get_backend()
    with pytest.raises(
        ValueError,
        match=r"y holds float64 values of shape \(4,\); class labels must be integers: "
        r"use y\.astype\(int\), or pass one-hot rows \(n, 3\)",
    ):
        prepare_y(np.array([0.0, 1.0, 2.0, 1.0]), 4, 3, np.dtype("float32"), backend)
    with pytest.raises(ValueError, match=r"they are not whole numbers"):
        prepare_y(np.array([0.5, 1.0, 2.0, 1.0]), 4, 3, np.dtype("float32"), backend)
    rows = prepare_y(np.eye(3)[[0, 1, 2, 1]], 4, 3, np.dtype("float32"), backend)  # one-hot floats are fine
    assert rows.shape == (4, 3)


def test_weight_arrays_must_hold_numbers():
    with pytest.raises(TypeError, match=r"weight 0 \(Conv2D w\) must hold numbers; got dtype <U1\. Pass float arrays"):
        check_weight_array(np.full((3, 3, 3, 2), "a"), "weight 0 (Conv2D w)")
    with pytest.raises(TypeError, match=r"got dtype object"):
        check_weight_array(np.array([None, 1.0]), "weight 1 (Conv2D b)")
    with pytest.raises(TypeError, match=r"got dtype <U"):
        check_weight_array([["x"]], "weight 1")
    assert check_weight_array([1.0, 2.0], "w").dtype == np.float64
    assert check_weight_array(np.zeros(2, np.float32), "w").dtype == np.float32


def test_seeds():
    assert check_seed(0) == 0 and check_seed(np.int64(3)) == 3 and check_seed(None) is None
    with pytest.raises(
        ValueError,
        match=r"seed must be an integer >= 0 \(numpy's seeds are non-negative\) or None; "
        r"got -1",
    ):
        check_seed(-1)
    with pytest.raises(
        TypeError, match=r"seed must be an integer >= 0 or None; got '1' \(str\)\. Write seed=1 without"
    ):
        check_seed("1")
    for bad in (1.0, True, [1]):
        with pytest.raises(TypeError, match=r"seed must be an integer >= 0 or None"):
            check_seed(bad)


def test_an_overflow_inside_the_model_is_reported_not_returned_as_nan():
    backend = get_backend()
    model = conv_model()
    x = np.full((2, 6, 6, 3), 3e38, np.float32)  # finite in float32; the conv's sums are not
    message = (
        r"produced NaN or Inf \(2 sample\(s\)\) from finite inputs: the values "
        r"overflowed float32 inside the model \(the largest \|x\| is 3e\+38"
    )
    with np.errstate(over="ignore", invalid="ignore"):
        with pytest.raises(ValueError, match="predict " + message):
            model.predict(x)  # it returned NaN without a word before
        with pytest.raises(ValueError, match="evaluate " + message):
            model.evaluate(x, np.zeros(2, dtype=int))
        out, _, _ = model.forward(backend.asarray(x))
    with pytest.raises(ValueError, match="predict " + message):
        check_output_finite(out, backend.asarray(x), "predict", backend)
    check_output_finite(backend.asarray(np.zeros((2, 3))), backend.asarray(x), "predict", backend)


def test_cli_settings_seed_zero_and_arrays_runs():
    assert setting_minimum("seed") == 0 and setting_minimum("epochs") == 0 and setting_minimum("batch_size") == 1
    assert check_int_setting("seed", 0, "run.toml") == 0
    with pytest.raises(ValueError, match=r"run\.toml: setting 'batch_size' must be >= 1; got 0"):
        check_int_setting("batch_size", 0, "run.toml")
    arrays = {"data": {"train": {"x": {"shape": [4, 6]}}}}
    with pytest.raises(
        ValueError,
        match=r"runs/a/config\.json is the config of a run trained from Python arrays "
        r"\(data source 'arrays'\), which the CLI cannot load",
    ):
        check_run_config_data(arrays, "runs/a/config.json")
    check_run_config_data(arrays, "runs/a/config.json", data_given=True)
    check_run_config_data({"data": {"source": "embedded"}}, "c.json")


def test_signs_not_found_is_one_line(tmp_path):
    message = signs_not_found(tmp_path / "nowhere")
    assert "\n" not in message and str(tmp_path / "nowhere") in message
    assert message.startswith("SIGNS not found (train_signs.h5 and test_signs.h5) in ")
    with pytest.raises(FileNotFoundError) as e:
        xpnn.datasets.load_signs(tmp_path)
    assert str(e.value) == signs_not_found(tmp_path)
