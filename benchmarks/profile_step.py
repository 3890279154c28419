"""Where one training step of the reference network spends its time: each plan unit's forward and backward.

    python benchmarks/profile_step.py                  # batch 64, native kernels as built
    XPNN_NATIVE=0 python benchmarks/profile_step.py    # the NumPy twin
    XPNN_CPU_THREADS=1 python benchmarks/profile_step.py --batch 256

Prints the median over --steps steps (after --warmup) of each unit's forward and backward, the loss
and Adam, in ms. The numbers in docs/benchmarks.md's "changes" list come from this script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads: idle BLAS workers sleep
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    args = ap.parse_args()

    from workloads import CLASSES, IMAGE, LEARNING_RATE, synthetic_batch

    from xpnn import Adam, get_backend, get_loss
    from xpnn.backends import native
    from xpnn.inputs import prepare_x, prepare_y
    from xpnn.layers.fused import plan
    from xpnn.reference import reference_model

    model = reference_model("float32", seed=1)
    backend = get_backend()
    x, y = synthetic_batch(args.batch)
    xb = prepare_x(x, IMAGE, model.dtype, backend)
    yb = prepare_y(y, len(xb), CLASSES, model.dtype, backend)
    loss, opt, units = get_loss("softmax_cross_entropy"), Adam(LEARNING_RATE, epsilon=1e-8), plan(model.layers)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn, *fn_args):
        start = time.perf_counter()
        result = fn(*fn_args)
        times.setdefault(name, []).append(time.perf_counter() - start)
        return result

    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        h, caches = xb, []
        for i, unit in enumerate(units):
            h, cache = timed(f"forward  {i} {type(unit).__name__}", unit.forward, h)
            caches.append(cache)
        _, d = timed("loss", loss, h, yb)
        per_unit = [None] * len(units)
        for i in range(len(units) - 1, -1, -1):
            d, per_unit[i] = timed(f"backward {i} {type(units[i]).__name__}", units[i].backward, d, caches[i], i > 0)
        grads = [g[key] for layer, g in zip(model.layers, [g for gs in per_unit for g in gs]) for key in layer.params]
        timed("adam", opt.apply, model.parameters(), grads)
        times.setdefault("step", []).append(time.perf_counter() - start)

    print(f"batch {args.batch}, native kernels {native.status()}, median of {args.steps} steps:")
    for name, values in times.items():
        print(f"  {name:28s} {statistics.median(values[args.warmup :]) * 1e3:8.3f} ms")


if __name__ == "__main__":
    main()
