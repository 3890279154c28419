"""Readers on small files the tests write (good and damaged), SIGNS' JPEG folder both ways, detection, sources."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from xpnn.data import binary, detect, images, sources
from xpnn.datasets import detect_data, image_folder, load_cifar10, load_data, load_idx
from xpnn.run_paths import resolve_run

PIL = pytest.importorskip("PIL.Image")


# ---- IDX ---------------------------------------------------------------------------------------------
def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx(folder: Path, x: np.ndarray, y: np.ndarray, gz: bool = False, prefix: str = "train") -> tuple[Path, Path]:
    paths = []
    for kind, arr, dims in (("images", x, 3), ("labels", y, 1)):
        name = f"{prefix}-{kind}-idx{dims}-ubyte" + (".gz" if gz else "")
        data = idx_bytes(arr)
        path = folder / name
        path.write_bytes(gzip.compress(data) if gz else data)
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture
def digits():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (7, 5, 4)).astype(np.uint8), rng.integers(0, 10, 7)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_reads_exactly(tmp_path, digits, gz):
    x, y = load_idx(*write_idx(tmp_path, *digits, gz=gz))
    np.testing.assert_array_equal(x[..., 0], digits[0])
    np.testing.assert_array_equal(y, digits[1])
    assert x.shape == (7, 5, 4, 1) and x.dtype == np.uint8 and y.dtype == np.int64


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"\x08\x03" + b[2:], "not a uint8 IDX"),  # wrong magic
        (lambda b: b[:2] + b"\x0d" + b[3:], "not a uint8 IDX"),  # float IDX
        (lambda b: b[:-5], "truncated"),
        (lambda b: b + b"\0", "truncated or damaged"),
        (lambda b: b[:4] + struct.pack(">3I", 100000, 1000, 1000) + b[16:], "declares dimensions"),
        (lambda b: b[:2], "truncated"),
    ],
)
def test_idx_damaged_images(tmp_path, digits, damage, message):
    images_path, labels_path = write_idx(tmp_path, *digits)
    images_path.write_bytes(damage(images_path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        load_idx(images_path, labels_path)


def test_idx_damaged_gzip_and_labels(tmp_path, digits):
    images_path, labels_path = write_idx(tmp_path, *digits, gz=True)
    images_path.write_bytes(images_path.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"truncated|cannot read"):
        load_idx(images_path, labels_path)
    images_path, labels_path = write_idx(tmp_path, digits[0], np.full(7, 10))
    with pytest.raises(ValueError, match="label 10, outside 0..9"):
        load_idx(images_path, labels_path)
    images_path, labels_path = write_idx(tmp_path, digits[0], digits[1][:6])
    with pytest.raises(ValueError, match="7 images but .* 6 labels"):
        load_idx(images_path, labels_path)


# ---- CIFAR-10 ----------------------------------------------------------------------------------------
def write_cifar(folder: Path, n: int = 3, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name in (*binary.CIFAR_TRAIN, binary.CIFAR_TEST):
        chw = rng.integers(0, 256, (n, 3, 32, 32)).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        records = np.concatenate([labels[:, None], chw.reshape(n, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())
        truth[name] = (chw.transpose(0, 2, 3, 1), labels)
    return truth


def test_cifar10_reads_planes_as_nhwc(tmp_path):
    truth = write_cifar(tmp_path / "cifar-10-batches-bin")
    (x, y), (xt, yt) = load_cifar10(tmp_path)  # the parent folder is found too
    np.testing.assert_array_equal(x, np.concatenate([truth[n][0] for n in binary.CIFAR_TRAIN]))
    np.testing.assert_array_equal(y, np.concatenate([truth[n][1] for n in binary.CIFAR_TRAIN]))
    np.testing.assert_array_equal(xt, truth[binary.CIFAR_TEST][0])
    assert x.shape == (15, 32, 32, 3) and yt.dtype == np.int64


def test_cifar10_damaged(tmp_path):
    write_cifar(tmp_path)
    test_file = tmp_path / binary.CIFAR_TEST
    good = test_file.read_bytes()
    test_file.write_bytes(good[:-7])
    with pytest.raises(ValueError, match="not a whole number"):
        load_cifar10(tmp_path)
    bad_label = bytearray(good)
    bad_label[0] = 57
    test_file.write_bytes(bytes(bad_label))
    with pytest.raises(ValueError, match="label 57"):
        load_cifar10(tmp_path)
    (tmp_path / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match="binary version"):
        load_cifar10(tmp_path)


# ---- image folders -----------------------------------------------------------------------------------
def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.fromarray(arr).save(path)


@pytest.fixture
def class_folder(tmp_path):
    """cats/ (3 images, one in a nested folder), dogs/ (2), a hidden folder and a text file that are skipped."""
    rng = np.random.default_rng(1)
    truth = {}
    for rel in ("dogs/b.png", "dogs/a.PNG", "cats/z.png", "cats/sub/c.png", "cats/m.png"):
        arr = rng.integers(0, 256, (5, 4, 3)).astype(np.uint8)
        write_png(tmp_path / "data" / rel, arr)
        truth[rel] = arr
    (tmp_path / "data" / "cats" / "notes.txt").write_text("x")
    write_png(tmp_path / "data" / ".hidden" / "x.png", np.zeros((5, 4, 3), np.uint8))
    return tmp_path / "data", truth


def test_image_folder_inferred_in_keras_order(class_folder):
    folder, truth = class_folder
    data = image_folder(folder, image_size=(5, 4), shuffle=False)
    order = ["cats/m.png", "cats/z.png", "cats/sub/c.png", "dogs/a.PNG", "dogs/b.png"]  # root's files, then subfolders
    assert data.class_names == ["cats", "dogs"]
    assert [p.relative_to(folder).as_posix() for p in data.paths] == order
    np.testing.assert_array_equal(data.y, [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(data.x, np.stack([truth[r] for r in order]))
    x, y = data  # unpacks to the arrays
    assert x.dtype == np.uint8 and y.dtype == np.int64


def test_image_folder_split_and_modes(class_folder):
    folder, truth = class_folder
    train, val = image_folder(folder, (5, 4), validation_split=0.4, subset="both", seed=3)
    assert len(train) == 3 and len(val) == 2
    assert not set(train.paths) & set(val.paths)
    again = image_folder(folder, (5, 4), validation_split=0.4, subset="validation", seed=3)
    assert again.paths == val.paths
    gray = image_folder(folder, (2, 3), color_mode="grayscale", shuffle=False)
    assert gray.x.shape == (5, 2, 3, 1)
    with pytest.raises(ValueError, match="pass a seed"):
        image_folder(folder, (5, 4), validation_split=0.2, subset="training")
    with pytest.raises(ValueError, match="subset and validation_split go together"):
        image_folder(folder, (5, 4), subset="training", seed=1)
    with pytest.raises(ValueError, match="subset must be one of"):
        image_folder(folder, (5, 4), validation_split=0.2, subset="train", seed=1)


def test_image_folder_same_split_as_keras(class_folder):
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    folder, _ = class_folder
    for subset in ("training", "validation"):
        theirs = keras.utils.image_dataset_from_directory(
            folder, image_size=(5, 4), validation_split=0.4, subset=subset, seed=7, verbose=False
        )
        ours = image_folder(folder, (5, 4), validation_split=0.4, subset=subset, seed=7)
        assert [str(p) for p in ours.paths] == list(theirs.file_paths)
        pixels = np.concatenate([np.asarray(x) for x, _ in theirs])  # Keras reshuffles its batches each pass
        np.testing.assert_array_equal(
            np.sort(pixels.reshape(len(pixels), -1), 0), np.sort(ours.x.reshape(len(pixels), -1), 0)
        )


def test_image_folder_damaged_files(class_folder):
    folder, _ = class_folder
    broken = folder / "cats" / "m.png"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"cannot read .*m.png as an image"):
        image_folder(folder, (5, 4), shuffle=False)
    with pytest.raises(ValueError, match="no class subfolders"):
        image_folder(folder / "dogs", (5, 4))
    with pytest.raises(ValueError, match="do not start with their label's digit"):
        image_folder(folder / "dogs", (5, 4), labels="filename_digit")
    with pytest.raises(ValueError, match="labels must be one of"):
        image_folder(folder, (5, 4), labels="names")


def test_huge_image_refused_from_its_header(tmp_path, monkeypatch):
    write_png(tmp_path / "a" / "big.png", np.zeros((40, 30, 3), np.uint8))
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ValueError, match="declares 30x40 pixels"):
        image_folder(tmp_path, (4, 4), shuffle=False)


def test_pillow_missing_is_a_clear_error(class_folder, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pil(name, *args, **kwargs):
        if name == "PIL" or name.startswith("PIL."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(ImportError, match="needs Pillow"):
        image_folder(class_folder[0], (5, 4), shuffle=False)


def signs_images():
    from xpnn.data.signs import find_signs

    folder = find_signs()
    if folder is None or not (folder / "images").is_dir():
        pytest.skip("SIGNS' JPEG folder not found (set XPNN_DATA or place ../shared/datasets/signs/images)")
    return folder / "images"


def test_signs_jpeg_folder_both_ways(tmp_path):
    root = signs_images()
    counts = {}
    for split in ("train_signs", "val_signs", "test_signs"):
        data = image_folder(root / split, (64, 64), labels="filename_digit", shuffle=False)
        counts[split] = len(data)
        np.testing.assert_array_equal(data.y, [int(p.name[0]) for p in data.paths])
    assert counts == {"train_signs": 864, "val_signs": 216, "test_signs": 120}
    # The other way: the same files in class subfolders (links), labels inferred from the folder names.
    by_digit = image_folder(root / "test_signs", (64, 64), labels="filename_digit", shuffle=False)
    for path in by_digit.paths:
        (tmp_path / path.name[0]).mkdir(exist_ok=True)
        (tmp_path / path.name[0] / path.name).symlink_to(path)
    inferred = image_folder(tmp_path, (64, 64), shuffle=False)
    assert inferred.class_names == by_digit.class_names == [str(i) for i in range(6)]
    rank = {p.name: i for i, p in enumerate(by_digit.paths)}
    order = [rank[p.name] for p in inferred.paths]
    np.testing.assert_array_equal(inferred.x, by_digit.x[order])
    np.testing.assert_array_equal(inferred.y, by_digit.y[order])
    loaded = load_data(root)
    assert loaded.spec["image_size"] == [64, 64] and len(loaded.train[0]) == 864 and len(loaded.test[0]) == 120


# ---- detection ---------------------------------------------------------------------------------------
def test_detect_each_kind(tmp_path, digits, class_folder):
    write_cifar(tmp_path / "cifar")
    assert detect_data(tmp_path / "cifar")[0] == "cifar10"
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    write_idx(mnist, *digits, gz=True)
    write_idx(mnist, *digits, prefix="t10k")
    kind, text = detect_data(mnist)
    assert kind == "idx" and "train-images-idx3-ubyte.gz" in text
    assert load_data(mnist).train[0].shape == (7, 5, 4, 1)
    folder, _ = class_folder
    kind, text = detect_data(folder)
    assert kind == "image_folder" and "5 images, 2 classes" in text
    data = load_data(folder, validation_split=0.4, seed=0)
    assert len(data.train[0]) == 3 and len(data.test[0]) == 2 and data.class_names == ["cats", "dogs"]
    assert data.kind == "image_folder"
    again = load_data(**data.spec)
    np.testing.assert_array_equal(again.test[0], data.test[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a data folder xpnn recognizes"):
        detect_data(empty)
    with pytest.raises(FileNotFoundError):
        detect_data(tmp_path / "missing")
    assert detect.KINDS


# ---- batch sources -----------------------------------------------------------------------------------
class Squares(sources.PyDataset):
    def __init__(self, n_batches: int = 5) -> None:
        self.n, self.ends = n_batches, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        x = np.full((2, 3), float(i))
        return x, np.array([i, i])

    def on_epoch_end(self) -> None:
        self.ends += 1


def test_indexed_source_order_comes_from_the_rng_and_resumes():
    source = Squares()
    assert sources.is_batch_source(source) and not sources.is_batch_source(np.zeros(3))
    full = [int(y[0]) for _, y in sources.iter_batches(source, np.random.default_rng(5), shuffle=True)]
    assert sorted(full) == list(range(5)) and full == list(np.random.default_rng(5).permutation(5))
    resumed = [int(y[0]) for _, y in sources.iter_batches(source, np.random.default_rng(5), shuffle=True, start=2)]
    assert resumed == full[2:]
    plain = [int(y[0]) for _, y in sources.iter_batches(source, np.random.default_rng(5))]
    assert plain == list(range(5))
    sources.end_epoch(source)
    assert source.ends == 1


def test_generator_source_continues_across_epochs():
    gen = ((np.full((1, 2), float(i)), np.array([i])) for i in range(10))
    source = sources.as_source(gen, steps_per_epoch=4)
    first = [int(y[0]) for _, y in sources.iter_batches(source, np.random.default_rng(0))]
    second = [int(y[0]) for _, y in sources.iter_batches(source, np.random.default_rng(0))]
    assert first == [0, 1, 2, 3] and second == [4, 5, 6, 7]
    with pytest.raises(ValueError, match="ran out after 2 of 4"):
        list(sources.iter_batches(source, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="pass steps_per_epoch"):
        sources.as_source(iter([]))


def test_bad_batches_named():
    class Bad(Squares):
        def __getitem__(self, i):
            return (np.zeros((2, 1)), np.zeros(3)) if i else (np.zeros((2, 1)), np.zeros(2), np.ones(2))

    with pytest.raises(ValueError, match="sample_weight"):
        list(sources.iter_batches(Bad(), np.random.default_rng(0)))
    with pytest.raises(ValueError, match=r"Bad\[1\] returned 2 inputs but 3 labels"):
        list(sources.iter_batches(Bad(), np.random.default_rng(0), start=1))


def test_prefetch_keeps_order_and_raises_in_place():
    assert list(sources.prefetch(iter(range(20)), lambda b: b * 2, depth=3)) == [2 * i for i in range(20)]

    def failing():
        yield 1
        raise RuntimeError("disk gone")

    got = []
    with pytest.raises(RuntimeError, match="disk gone"):
        for item in sources.prefetch(failing()):
            got.append(item)
    assert got == [1]
    early = sources.prefetch(iter(range(100)), depth=1)
    assert next(early) == 0
    early.close()  # stopping early does not hang


# ---- run ids -----------------------------------------------------------------------------------------
def test_resolve_run(tmp_path):
    root = tmp_path / "runs"
    for name in ("20261125-031500-123456-ab12", "20261125-041500-000001-cd34"):
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text("{}")
    assert resolve_run("20261125-031500-123456-ab12", root) == root / "20261125-031500-123456-ab12"
    assert resolve_run(root / "20261125-041500-000001-cd34", root) == root / "20261125-041500-000001-cd34"
    assert resolve_run("20261125-04", root).name.endswith("cd34")
    with pytest.raises(ValueError, match="matches 2 runs"):
        resolve_run("20261125", root)
    with pytest.raises(FileNotFoundError, match="Closest"):
        resolve_run("20261125-031500-123456-ab13", root)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        resolve_run(root, root)
    shutil.rmtree(root)
    with pytest.raises(FileNotFoundError, match="no runs folder"):
        resolve_run("x", root)


def test_predict_inputs_from_folders_and_files(class_folder):
    folder, truth = class_folder
    x, paths = images.predict_inputs([folder / "dogs", folder / "cats" / "z.png"], (5, 4))
    assert [p.name for p in paths] == ["a.PNG", "b.png", "z.png"]
    np.testing.assert_array_equal(x, np.stack([truth["dogs/a.PNG"], truth["dogs/b.png"], truth["cats/z.png"]]))
    assert images.predict_inputs(folder, (3, 3))[0].shape == (5, 3, 3, 3)
    with pytest.raises(ValueError, match="is 4x5; the model takes 3x3"):
        images.predict_inputs(folder, (3, 3), resize=False)
    with pytest.raises(FileNotFoundError):
        images.predict_inputs(folder / "nothing.png", (3, 3))


def test_a_keras_pydataset_is_a_batch_source():
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")

    class Theirs(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return np.full((2, 1), float(i)), np.array([i, i])

    source = Theirs()
    assert sources.is_batch_source(source)
    got = [int(y[0]) for _, y in sources.iter_batches(source, np.random.default_rng(1), shuffle=True)]
    assert got == list(np.random.default_rng(1).permutation(3))
