"""Model files: round trips, Keras weight compatibility, atomic writes, and clear errors for bad files."""

from __future__ import annotations

import errno

import h5py
import numpy as np
import pytest

import xpnn
import xpnn.io
from xpnn import SGD, Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from xpnn.reference import reference_model, reference_optimizer


@pytest.fixture(scope="module")
def data():
    return xpnn.datasets.load_embedded(n_train=48, n_test=12, seed=4)


def small_model(dtype="float32", seed=2):
    layers = [Conv2D(4, 3, padding="same"), ReLU(), MaxPool2D(4), Flatten(), Dense(6)]
    return Sequential(layers, dtype=dtype).build((64, 64, 3), seed=seed)


def test_round_trip_keeps_predictions_dtype_and_optimizer(tmp_path, data):
    (x, y), (xt, _) = data
    for dtype in ("float32", "float64"):
        model = small_model(dtype)
        opt = Adam(0.01, epsilon=1e-7)
        model.fit(x, y, epochs=1, batch_size=16, optimizer=opt, verbose=0)
        model.save(tmp_path / f"m-{dtype}.h5")
        back = xpnn.load_model(tmp_path / f"m-{dtype}.h5")
        assert back.dtype == np.dtype(dtype)
        assert [type(a) for a in back.layers] == [type(a) for a in model.layers]
        assert [a.get_config() for a in back.layers] == [a.get_config() for a in model.layers]
        assert np.array_equal(back.predict(xt), model.predict(xt))
        assert back.optimizer.get_config() == opt.get_config()
        assert back.optimizer.iterations == opt.iterations == 3
        for a, b in zip(back.optimizer.m + back.optimizer.v, opt.m + opt.v):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def test_continued_training_after_load_is_bit_identical(tmp_path, data):
    (x, y), _ = data
    kept = reference_model(seed=3)
    opt = reference_optimizer()
    kept.fit(x, y, epochs=2, batch_size=16, optimizer=opt, seed=5, verbose=0)
    kept.save(tmp_path / "mid.h5")
    loaded = xpnn.load_model(tmp_path / "mid.h5")
    kept.fit(x, y, epochs=2, batch_size=16, optimizer=opt, seed=6, verbose=0)
    loaded.fit(x, y, epochs=2, batch_size=16, seed=6, verbose=0)  # the loaded optimizer, moments and step
    for a, b in zip(kept.get_weights(), loaded.get_weights()):
        assert a.tobytes() == b.tobytes()


def test_sgd_and_uncompiled_models_round_trip(tmp_path, data):
    (x, y), (xt, _) = data
    model = small_model()
    model.save(tmp_path / "fresh.h5")  # never trained: no optimizer in the file
    assert xpnn.load_model(tmp_path / "fresh.h5").optimizer is None
    model.train_on_batch(x[:8], y[:8], optimizer=SGD(0.1))
    model.save(tmp_path / "sgd.h5")
    back = xpnn.load_model(tmp_path / "sgd.h5")
    assert isinstance(back.optimizer, SGD) and back.optimizer.learning_rate == 0.1
    assert np.array_equal(back.predict(xt), model.predict(xt))


def test_keras_takes_the_weights_and_predicts_the_same(data):
    tf = pytest.importorskip("tensorflow")
    _, (xt, _) = data
    model = reference_model("float32", seed=7)
    keras = tf.keras.Sequential(
        [
            tf.keras.Input((64, 64, 3)),
            tf.keras.layers.Conv2D(8, 4, padding="same"),
            tf.keras.layers.ReLU(),
            tf.keras.layers.MaxPool2D(8, strides=8, padding="same"),
            tf.keras.layers.Conv2D(16, 2, padding="same"),
            tf.keras.layers.ReLU(),
            tf.keras.layers.MaxPool2D(4, strides=4, padding="same"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(6),
        ]
    )
    keras.set_weights(model.get_weights())
    ours = model.predict(xt)
    theirs = keras.predict(xt.astype(np.float32) / 255.0, verbose=0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert np.array_equal(ours.argmax(1), theirs.argmax(1))


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_interrupted_save_leaves_the_old_file(tmp_path, data, monkeypatch):
    _, (xt, _) = data
    path = tmp_path / "model.h5"
    old = small_model(seed=1)
    old.save(path)
    expected = old.predict(xt)
    new = small_model(seed=2)
    real = xpnn.io._write_arrays

    def crash_midway(group, arrays):
        real(group, arrays[:1])
        raise KeyboardInterrupt  # the process is stopped halfway through the weights

    monkeypatch.setattr(xpnn.io, "_write_arrays", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        new.save(path)
    assert _files(tmp_path) == ["model.h5"]  # no temporary file left behind
    assert np.array_equal(xpnn.load_model(path).predict(xt), expected)


def test_full_disk_on_save_names_the_file_and_keeps_the_old_one(tmp_path, data, monkeypatch):
    _, (xt, _) = data
    path = tmp_path / "model.h5"
    small_model(seed=1).save(path)
    before = path.read_bytes()

    def no_space(self, name, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", no_space)
    with pytest.raises(OSError, match=r"no space left.*model\.h5.*nothing was half-written.*Free some disk space") as e:
        small_model(seed=2).save(path)
    assert e.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and _files(tmp_path) == ["model.h5"]


def test_save_into_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"folder .*nowhere does not exist; create it first"):
        small_model().save(tmp_path / "nowhere" / "m.h5")


def test_bad_model_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.h5"
    with pytest.raises(FileNotFoundError, match=r"missing\.h5 does not exist"):
        xpnn.load_model(missing)
    good = tmp_path / "good.h5"
    small_model().save(good)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"truncated\.h5 .*(not a readable HDF5|missing or damaged)"):
        xpnn.load_model(truncated)
    text = tmp_path / "notes.h5"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=r"notes\.h5 is not a readable HDF5 model file"):
        xpnn.load_model(text)
    foreign = tmp_path / "keras.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("model_weights", data=np.zeros(3))
    with pytest.raises(ValueError, match=r"keras\.h5 is an HDF5 file but not an xpnn model.*set_weights"):
        xpnn.load_model(foreign)
    with pytest.raises(ValueError, match=r"is a folder, not a model file"):
        xpnn.load_model(tmp_path)
    newer = tmp_path / "newer.h5"
    small_model().save(newer)
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(ValueError, match=r"newer\.h5 uses xpnn model format 99.*upgrade xpnn"):
        xpnn.load_model(newer)
    damaged = tmp_path / "damaged.h5"
    small_model().save(damaged)
    with h5py.File(damaged, "a") as f:
        del f["weights"]["003"]
    with pytest.raises(ValueError, match=r"damaged\.h5 is corrupt: its contents do not match the SHA-256"):
        xpnn.load_model(damaged)
    with h5py.File(damaged, "a") as f:
        xpnn.io.seal(f)  # the same change with a matching checksum: the architecture check names it
    with pytest.raises(
        ValueError, match=r"damaged\.h5 holds a model xpnn cannot rebuild: .*3 weight arrays but its architecture has 4"
    ):
        xpnn.load_model(damaged)
