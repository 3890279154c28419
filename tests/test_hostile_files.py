"""Model files from a stranger: links outside the file, memory bombs, flipped bytes, damaged files.

Every hostile file is built here with h5py from a real xpnn file. `reseal` recomputes the checksum
after a change, so a test reaches the check it is about rather than stopping at "corrupt".
"""

from __future__ import annotations

import json
import tracemalloc

import h5py
import numpy as np
import pytest

import xpnn
import xpnn.io
from xpnn import Adam, Dense, Flatten, Sequential
from xpnn.errors import ModelFileError
from xpnn.h5check import UnsafeFileError
from xpnn.reference import reference_model


def trained(seed: int = 1) -> Sequential:
    """The reference model after one Adam step, so its file holds weights and optimizer moments."""
    model = reference_model(seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    model.train_on_batch(x, np.arange(4) % 6, optimizer=Adam(0.01))
    return model


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.h5"
    trained().save(path)
    return path


def reseal(path) -> None:
    with h5py.File(path, "a") as f:
        xpnn.io.seal(f)


def replace(path, name: str, make, seal: bool = True) -> None:
    """Replace object `name` by what `make(f, name)` puts there, then reseal (a file that is unsafe cannot be)."""
    with h5py.File(path, "a") as f:
        del f[name]
        make(f, name)
        if seal:
            xpnn.io.seal(f)


# ---- 1. nothing outside the file -------------------------------------------------------------------
def test_external_link_to_another_files_weights_is_refused(tmp_path, saved):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["w"] = np.full((4, 4, 3, 8), 7.0, np.float32)
    with h5py.File(saved, "a") as f:
        del f["weights/000"]
        f["weights/000"] = h5py.ExternalLink(str(other), "/w")
    with pytest.raises(UnsafeFileError, match=r"model\.h5: /weights/000 is an external link to .*other\.h5:/w"):
        xpnn.load_model(saved)


def test_soft_links_and_soft_link_cycles_are_refused(saved):
    with h5py.File(saved, "a") as f:
        f["weights/loop_a"] = h5py.SoftLink("/weights/loop_b")
        f["weights/loop_b"] = h5py.SoftLink("/weights/loop_a")
    with pytest.raises(UnsafeFileError, match=r"/weights/loop_a is a soft link to /weights/loop_b"):
        xpnn.load_model(saved)


def test_a_weight_that_is_a_soft_link_is_refused(saved):
    replace(saved, "weights/001", lambda f, n: f.__setitem__(n, h5py.SoftLink("/weights/000")), seal=False)
    with pytest.raises(UnsafeFileError, match=r"/weights/001 is a soft link to /weights/000"):
        xpnn.load_model(saved)


@pytest.mark.parametrize("source_exists", [True, False])
def test_virtual_datasets_are_refused(tmp_path, saved, source_exists):
    source = tmp_path / "source.h5"
    if source_exists:
        with h5py.File(source, "w") as f:
            f["b"] = np.full(8, 3.0, np.float32)

    def virtual(f, name):
        layout = h5py.VirtualLayout(shape=(8,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(source), "b", shape=(8,))
        f.create_virtual_dataset(name, layout)

    replace(saved, "weights/001", virtual, seal=False)
    with pytest.raises(UnsafeFileError, match=r"/weights/001 is a virtual dataset mapping other files"):
        xpnn.load_model(saved)


def test_external_raw_storage_is_refused(tmp_path, saved):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(8, dtype=np.float32).tobytes())
    replace(saved, "weights/001", lambda f, n: f.create_dataset(n, (8,), "f4", external=[(str(secret), 0, 32)]), False)
    with pytest.raises(UnsafeFileError, match=r"/weights/001 keeps its data in an external file .*secret\.bin"):
        xpnn.load_model(saved)


def test_hard_link_loops_and_compressed_data_are_refused(saved, tmp_path):
    loop = tmp_path / "loop.h5"
    loop.write_bytes(saved.read_bytes())
    with h5py.File(loop, "a") as f:
        f["weights/again"] = f["weights"]
    with pytest.raises(UnsafeFileError, match=r"/weights/again is a second link"):
        xpnn.load_model(loop)
    replace(
        saved, "weights/001", lambda f, n: f.create_dataset(n, data=np.zeros(8, np.float32), compression="gzip"), False
    )
    with pytest.raises(UnsafeFileError, match=r"/weights/001 is compressed"):
        xpnn.load_model(saved)


# ---- 2. memory bombs -------------------------------------------------------------------------------
def peak_bytes(fn) -> tuple[int, object]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = None
        try:
            out = fn()
        except Exception as exc:  # noqa: BLE001 - the caller checks what was raised
            out = exc
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


def test_a_declared_but_unstored_huge_weight_is_refused_without_allocating(saved):
    replace(saved, "weights/000", lambda f, n: f.create_dataset(n, (16384, 16384), "f4"), False)
    assert saved.stat().st_size < 64 << 10
    peak, exc = peak_bytes(lambda: xpnn.load_model(saved))
    assert isinstance(exc, UnsafeFileError), exc
    assert "/weights/000 declares shape (16384, 16384) (1073741824 bytes) but stores 0 bytes" in str(exc)
    assert peak < 16 << 20


def test_a_stored_weight_of_the_wrong_shape_is_refused_before_it_is_read(saved):
    big = np.ones((3000, 3000), np.float32)  # 36 MB really in the file, against a (4, 4, 3, 8) kernel
    replace(saved, "weights/000", lambda f, n: f.create_dataset(n, data=big))
    peak, exc = peak_bytes(lambda: xpnn.load_model(saved))
    assert isinstance(exc, ValueError), exc
    assert "/weights/000 (Conv2D w) declares shape (3000, 3000); the architecture needs (4, 4, 3, 8)" in str(exc)
    assert peak < 12 << 20  # the checksum reads 4 MiB at a time; the weight itself is never read whole


def test_a_wrongly_shaped_adam_moment_is_refused(saved):
    replace(saved, "optimizer/m/004", lambda f, n: f.create_dataset(n, data=np.zeros((64, 7), np.float32)))
    with pytest.raises(ValueError, match=r"/optimizer/m/004 \(Dense w m\) declares shape \(64, 7\); .*needs \(64, 6\)"):
        xpnn.load_model(saved)


def test_a_missing_adam_moment_and_the_base_optimizer_class_are_refused(saved, tmp_path):
    other = tmp_path / "base.h5"
    other.write_bytes(saved.read_bytes())
    with h5py.File(saved, "a") as f:
        del f["optimizer/v/005"]
        xpnn.io.seal(f)
    with pytest.raises(ValueError, match=r"optimizer state 'v' has 5 arrays but the model has 6 trainable weights"):
        xpnn.load_model(saved)
    with h5py.File(other, "a") as f:
        f["optimizer"].attrs["config"] = json.dumps({"class_name": "Optimizer", "config": {}})
        xpnn.io.seal(f)
    with pytest.raises(ValueError, match=r"unknown optimizer class 'Optimizer'; choose one of .*adam"):
        xpnn.load_model(other)


def test_a_huge_input_shape_is_refused_before_building(saved):
    with h5py.File(saved, "a") as f:
        f.attrs["input_shape"] = json.dumps([32768, 32768, 3])
        xpnn.io.seal(f)
    peak, exc = peak_bytes(lambda: xpnn.load_model(saved))
    assert isinstance(exc, ValueError), exc
    assert "input_shape [32768, 32768, 3] holds 3221225472 values a sample" in str(exc)
    assert "refused before building" in str(exc)
    assert peak < 16 << 20


def test_a_layer_declaring_a_huge_output_is_refused_before_building(saved):
    with h5py.File(saved, "a") as f:
        layers = json.loads(f.attrs["layers"])
        layers[-1]["config"]["units"] = 1 << 30
        f.attrs["layers"] = json.dumps(layers)
        xpnn.io.seal(f)
    peak, exc = peak_bytes(lambda: xpnn.load_model(saved))
    assert isinstance(exc, ValueError), exc
    assert "layer 7 (Dense) outputs (1073741824,)" in str(exc) and "refused before building" in str(exc)
    assert peak < 16 << 20


@pytest.mark.parametrize("initializer", ["glorot_uniform", "zeros"])
def test_a_layer_whose_weights_the_file_does_not_hold_is_refused_before_building(saved, initializer):
    """[8192, 8192, 2] is under the input cap, but Flatten -> Dense(6) would draw a (2**27, 6) kernel: 6 GiB."""
    with h5py.File(saved, "a") as f:
        layers = [
            {"class_name": "Flatten", "config": {}},
            {"class_name": "Dense", "config": {"units": 6, "kernel_initializer": initializer}},
        ]
        f.attrs["layers"] = json.dumps(layers)
        f.attrs["input_shape"] = json.dumps([8192, 8192, 2])
        xpnn.io.seal(f)
    peak, exc = peak_bytes(lambda: xpnn.load_model(saved))
    assert isinstance(exc, ValueError), exc
    assert "layer 1 (Dense) would draw 805306368 initial weights but the file stores only" in str(exc)
    assert "refused before building" in str(exc)
    assert peak < 16 << 20


def test_json_nested_100000_deep_is_refused_not_a_recursion_error(saved):
    with h5py.File(saved, "a") as f:
        f.attrs["layers"] = "[" * 100_000 + "]" * 100_000
        xpnn.io.seal(f)
    with pytest.raises(ValueError, match=r"layers nests JSON 100000 levels deep \(xpnn reads at most 64\); refused"):
        xpnn.load_model(saved)


def test_peak_memory_of_a_load_is_at_most_twice_the_model(tmp_path):
    model = Sequential([Flatten(), Dense(1000), Dense(10)]).build((32, 32, 3), seed=1)
    x = np.random.default_rng(0).random((8, 32, 32, 3)).astype(np.float32)
    model.train_on_batch(x, np.arange(8) % 10, optimizer=Adam(0.01))
    path = tmp_path / "big.h5"
    model.save(path)
    real = sum(w.nbytes for w in model.get_weights()) * 3  # weights, Adam's m and v
    assert real > 30 << 20
    peak, loaded = peak_bytes(lambda: xpnn.load_model(path))
    assert isinstance(loaded, Sequential), loaded
    assert peak <= 2 * real, (peak, real)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_peak_memory_of_a_weights_only_load_is_at_most_twice_the_model(tmp_path, dtype):
    """Without optimizer state the weights are all there is: the build draws nothing in float64 first."""
    model = Sequential([Flatten(), Dense(1000), Dense(10)], dtype=dtype).build((32, 32, 3), seed=1)
    path = tmp_path / "weights_only.h5"
    xpnn.io.save_model(model, path, optimizer=None)
    real = sum(w.nbytes for w in model.get_weights())
    peak, loaded = peak_bytes(lambda: xpnn.load_model(path))
    assert isinstance(loaded, Sequential), loaded
    assert peak <= 2 * real, (peak / real, dtype)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))


# ---- 3. integrity ----------------------------------------------------------------------------------
def test_flipped_bytes_in_a_weight_are_found(saved):
    with h5py.File(saved, "r") as f:
        offset = f["weights/004"].id.get_offset()
    data = bytearray(saved.read_bytes())
    for i in range(16):
        data[offset + 40 + i] ^= 0x5A
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"model\.h5 is corrupt: its contents do not match the SHA-256"):
        xpnn.load_model(saved)


def test_changed_architecture_attribute_is_found(saved):
    with h5py.File(saved, "a") as f:
        f.attrs["layers"] = f.attrs["layers"].replace('"strides": [8, 8]', '"strides": [7, 7]', 1)
    with pytest.raises(ModelFileError, match=r"is corrupt"):
        xpnn.load_model(saved)


def test_a_format_1_file_without_a_checksum_still_loads(saved, tmp_path):
    expected = xpnn.load_model(saved).get_weights()
    with h5py.File(saved, "a") as f:
        del f.attrs["sha256"]
        f.attrs["format_version"] = 1
    assert all(np.array_equal(a, b) for a, b in zip(xpnn.load_model(saved).get_weights(), expected))
    with h5py.File(saved, "a") as f:
        f.attrs["format_version"] = 2  # format 2 without its checksum: stripped or damaged
    with pytest.raises(ModelFileError, match=r"is corrupt"):
        xpnn.load_model(saved)
    with h5py.File(saved, "a") as f:
        f.attrs["format_version"] = "two"
    with pytest.raises(ValueError, match=r"model\.h5: format_version must be an integer; got 'two'"):
        xpnn.load_model(saved)


def test_every_damaged_copy_loads_the_same_model_or_gives_one_xpnn_error(saved, tmp_path):
    good = saved.read_bytes()
    expected = xpnn.load_model(saved).get_weights()
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(60):
        data = bytearray(good)
        size = int(rng.choice([1, 16, 64]))
        start = int(rng.integers(0, len(data) - size))
        data[start : start + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        path = tmp_path / f"damaged{trial}.h5"
        path.write_bytes(bytes(data))
        try:
            back = xpnn.load_model(path)
        except ModelFileError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            outcomes.add("refused")
            continue
        assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), expected)), trial
        outcomes.add("same")
    assert "refused" in outcomes


def test_a_checkpoints_extra_group_is_covered_by_the_checksum(tmp_path):
    path = tmp_path / "checkpoint.h5"
    model = trained()

    def fill(f):
        xpnn.io.write_model(f, model, None)
        f.create_group("train_state").attrs["epoch"] = 3

    xpnn.io.write_h5(path, fill)
    with xpnn.io.open_model_file(path, "checkpoint") as f:
        assert f.attrs["format_version"] == xpnn.io.FORMAT_VERSION and int(f["train_state"].attrs["epoch"]) == 3
    with h5py.File(path, "a") as f:
        f["train_state"].attrs["epoch"] = 4
    with pytest.raises(ModelFileError, match=r"checkpoint\.h5 is corrupt"):
        xpnn.io.open_model_file(path, "checkpoint")
