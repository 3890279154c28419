"""Every ```python block in README.md, docs/index.md and docs/guide/*.md runs as written.

The blocks of one page run in order in one namespace (a later block may use what an earlier one made), in a
temporary folder that holds the small files the pages name (images.npy, an IDX pair, a .keras file). Names the
pages use without defining them (`model`, `x`, `y`, `xt`, `yt`, ...) start out as a small reference model and a
few images of the embedded set, and `load_signs` hands out the embedded set, so no page needs SIGNS.

A block preceded by `<!-- snippet: skip (reason) -->` is not run (it needs MPI, a GPU or TensorFlow); one
preceded by `<!-- snippet: needs MODULE -->` runs where MODULE imports and is skipped otherwise.
"""

from __future__ import annotations

import gzip
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

import xpnn
import xpnn.keras
from xpnn.data.embedded import load_embedded
from xpnn.reference import reference_model

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "index.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]
BLOCK = re.compile(r"(?:<!--\s*snippet:\s*(?P<mark>[^>]*?)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S)


def blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line, mark, code) of each ```python block of a page; mark is '' or the snippet comment's text."""
    text = page.read_text(encoding="utf-8")
    found = BLOCK.finditer(text)
    return [(text.count("\n", 0, m.start("code")), m.group("mark") or "", m.group("code")) for m in found]


def small_data(n_train: int = 48, n_test: int = 16) -> tuple:
    return load_embedded(n_train=n_train, n_test=n_test, seed=0)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_files(folder: Path, x: np.ndarray, y: np.ndarray) -> None:
    """The files the pages read: images.npy/labels.npy, an IDX pair, flowers/, CIFAR-10, model.keras, model.h5."""
    np.save(folder / "images.npy", x)
    np.save(folder / "labels.npy", y)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 20))
    try:  # an image folder, a class per subfolder, where Pillow can write one
        from PIL import Image

        for i, label in enumerate(y[:12]):
            (folder / "flowers" / f"class{label}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / "flowers" / f"class{label}" / f"{i}.png")
    except ImportError:
        pass
    cifar = folder / "cifar-10-batches-bin"  # CIFAR-10's binary layout: records of label byte + 3072 pixels
    cifar.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (4, 3073), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(cifar / name)
    model = reference_model(dtype="float32")
    model.to_keras(folder / "model.keras")
    model.save(folder / "model.h5")


def namespace() -> dict:
    """What a page may use without defining it: a compiled reference model and a few embedded images."""
    (x, y), (xt, yt) = small_data()
    model = reference_model(dtype="float32").compile(optimizer=xpnn.Adam(0.009))
    return {
        "xpnn": xpnn, "np": np, "model": model, "opt": xpnn.Adam(0.009),
        "x": x, "y": y, "xt": xt, "yt": yt, "x_train": x, "y_train": y, "x_test": xt, "y_test": yt,
        "batches": [(x[:16], y[:16]), (x[16:32], y[16:32])],
    }  # fmt: skip


CASES = [(page, line, mark, code) for page in PAGES for line, mark, code in blocks(page)]


def test_pages_have_snippets():
    assert len(CASES) >= 15, [(p.name, line) for p, line, _, _ in CASES]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_snippets_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cases = blocks(page)
    if not cases:
        pytest.skip(f"{page.name} has no python blocks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("XPNN_BACKEND", raising=False)
    monkeypatch.setattr(xpnn.datasets, "load_signs", lambda *a, **k: small_data())
    monkeypatch.setattr(xpnn.datasets, "load_embedded", lambda *a, **k: small_data())
    ns = namespace()
    make_files(tmp_path, ns["x"], ns["y"])
    ran = 0
    for line, mark, code in cases:
        if mark.startswith("skip"):
            continue
        if mark.startswith("needs "):
            try:
                __import__(mark.split()[1])
            except ImportError:
                continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exec(compile(code, f"{page.name}:{line + 1}", "exec"), ns)  # noqa: S102 - the docs' own code
        except Exception as exc:
            raise AssertionError(f"{page.relative_to(ROOT)}, the block at line {line + 1}: {exc!r}") from exc
        ran += 1
    assert ran or all(m for _, m, _ in cases)
