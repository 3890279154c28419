"""An explicit data place that holds no data is an error, never a silent fallback to other data (issue 18)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xpnn.datasets import locate_signs

ROOT = Path(__file__).resolve().parents[1]


def test_data_path_without_signs_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("XPNN_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="--data"):
        locate_signs(tmp_path)


def test_xpnn_data_without_signs_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("XPNN_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="XPNN_DATA"):
        locate_signs()


def test_xpnn_data_with_signs_found(tmp_path, monkeypatch):
    (tmp_path / "signs").mkdir()
    for name in ("train_signs.h5", "test_signs.h5"):
        (tmp_path / "signs" / name).write_bytes(b"")
    monkeypatch.setenv("XPNN_DATA", str(tmp_path))
    assert locate_signs() == tmp_path / "signs"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_train_example_refuses_empty_data_place(tmp_path, how):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(ROOT / "examples" / "train.py"), "--smoke"]
    if how == "flag":
        args += ["--data", str(tmp_path)]
        env.pop("XPNN_DATA", None)
    else:
        env["XPNN_DATA"] = str(tmp_path)
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no SIGNS data" in proc.stderr and "EMBEDDED" not in proc.stdout
