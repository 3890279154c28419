"""Print xpnn's largest relative difference from each Keras/TF training fixture, in float64 and float32.

    python scripts/training_fixture_diffs.py   # no TensorFlow needed; reads tests/fixtures/keras_*.h5

Relative difference of an array: max|xpnn − TF| / max|TF| (the tests also check element-wise); for an
optimizer, the largest over its steps; for a loss, over its value and gradient, with and without weights.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_keras_fixtures import FIXTURES, _loss_cases, _optimizer_cases, loss_run, optimizer_run  # noqa: E402

import xpnn  # noqa: E402
from xpnn.schedules import schedule_from_config  # noqa: E402


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-300))


def main() -> None:
    backend = xpnn.set_backend("numpy")
    print(f"{'case':44}{'float64':>10}{'float32':>10}")
    for case in _optimizer_cases():
        row = []
        for dtype in ("float64", "float32"):
            got, expected, _ = optimizer_run(case, dtype, backend)
            row.append(max(rel(g, e) for g, e in zip(got, expected)))
        print(f"optimizer {case:34}{row[0]:10.1e}{row[1]:10.1e}")
    for case in _loss_cases():
        row = []
        for dtype in ("float64", "float32"):
            diffs = []
            for weighted in (False, True):
                cost, dout, value, grad = loss_run(case, dtype, weighted, backend)
                diffs += [rel(cost, value), rel(dout, grad)]
            row.append(max(diffs))
        print(f"loss {case:39}{row[0]:10.1e}{row[1]:10.1e}")
    with h5py.File(FIXTURES / "keras_schedules.h5", "r") as f:
        steps = [int(s) for s in f["steps"]]
        for case in sorted(k for k in f if k != "steps"):
            schedule = schedule_from_config(json.loads(f[case].attrs["schedule"]))
            diff = rel([schedule(s) for s in steps], f[case]["values"])
            print(f"schedule {case:35}{diff:10.1e}{'(host)':>10}")


if __name__ == "__main__":
    main()
