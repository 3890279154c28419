"""Print xpnn's largest relative difference from each TensorFlow fixture, per quantity, in float64 and float32.

    python scripts/fixture_diffs.py          # no TensorFlow needed; reads tests/fixtures/tf_*.h5

Relative difference of an array: max|xpnn − TF| / max|TF| (the tests also check element-wise).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from test_tf_fixtures import FILES, build_model, load_fixture, make_optimizer  # noqa: E402

import xpnn  # noqa: E402

KINDS = ("cost", "logits", "outputs", "input_grads", "dW", "db", "weights")


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-300))


def worst(path: Path, dtype: str) -> dict[str, float | None]:
    """The largest relative difference of each kind over all layers and steps (None: not in the fixture)."""
    fx = load_fixture(path)
    model, opt = build_model(fx, dtype), make_optimizer(fx["optimizer"])
    out: dict[str, float | None] = dict.fromkeys(KINDS)
    for step in fx["steps"]:
        t = xpnn.trace(model, fx["x"], fx["y"])
        pairs = [("cost", t.cost, step["cost"]), ("logits", t.logits, step["logits"])]
        pairs += [("outputs", a, b) for a, b in zip(t.outputs, step["outputs"] or [])]
        pairs += [("input_grads", a, b) for a, b in zip(t.input_grads, step["input_grads"] or [])]
        pairs += [("dW" if i % 2 == 0 else "db", a, b) for i, (a, b) in enumerate(zip(t.grads, step["grads"]))]
        model.train_on_batch(fx["x"], fx["y"], optimizer=opt)
        pairs += [("weights", a, b) for a, b in zip(model.get_weights(), step["weights"])]
        for kind, a, b in pairs:
            out[kind] = max(out[kind] or 0.0, rel(a, b))
    return out


def main() -> None:
    for dtype in ("float64", "float32"):
        print(f"\n{dtype}: max relative difference from TensorFlow float64")
        print(f"{'fixture':<30}" + "".join(f"{k:>12}" for k in KINDS))
        for path in FILES:
            row = worst(path, dtype)
            print(
                f"{path.stem:<30}" + "".join(f"{row[k]:>12.1e}" if row[k] is not None else f"{'-':>12}" for k in KINDS)
            )


if __name__ == "__main__":
    main()
