"""Where one step of any bench workload spends its time: each plan unit's forward and backward, the loss, Adam.

    python benchmarks/profile_units.py bndrop-train64          # a workload key of benchmarks/workloads.py
    python benchmarks/profile_units.py vgg-predict128          # inference: the forward units only
    XPNN_NATIVE=0 python benchmarks/profile_units.py alexpool-train64   # the NumPy twin

Prints the median over --steps steps (after --warmup) of each unit in ms, the profile behind each change
of issue 16 (docs/benchmarks.md). `profile_step.py` is the same for the reference network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads: idle BLAS workers sleep
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload", help="a key of benchmarks/workloads.py, e.g. bndrop-train64")
    ap.add_argument("--batch", type=int, help="another batch size than the workload's")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()

    from peers import xpnn_model
    from workloads import LEARNING_RATE, WORKLOADS, synthetic_batch

    from xpnn import Adam, get_backend, get_loss
    from xpnn.backends import native
    from xpnn.inputs import prepare_x, prepare_y
    from xpnn.layers.fused import plan

    wl = {w.key: w for w in WORKLOADS}[args.workload]
    if args.batch is not None:
        wl = replace(wl, batch=args.batch)
    model = xpnn_model(wl.net)
    backend = get_backend()
    x, y = synthetic_batch(wl.batch, wl.net.input_shape, wl.net.classes)
    xb = prepare_x(x, wl.net.input_shape, model.dtype, backend)
    yb = prepare_y(y, len(xb), wl.net.classes, model.dtype, backend)
    loss, opt, units = get_loss("softmax_cross_entropy"), Adam(LEARNING_RATE, epsilon=1e-8), plan(model.layers)
    training = wl.kind == "train"
    times: dict[str, list[float]] = {}

    def timed(name: str, fn, *fn_args, **kw):
        start = time.perf_counter()
        result = fn(*fn_args, **kw)
        times.setdefault(name, []).append(time.perf_counter() - start)
        return result

    def label(i: int, unit) -> str:
        return f"{i} " + "+".join(type(layer).__name__ for layer in unit.layers)

    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        h, caches = xb, []
        for i, unit in enumerate(units):
            h, cache = timed(f"forward  {label(i, unit)}", unit.forward, h, training=training)
            caches.append(cache)
        if training:
            _, d = timed("loss", loss, h, yb)
            per_unit = [None] * len(units)
            for i in range(len(units) - 1, -1, -1):
                d, per_unit[i] = timed(f"backward {label(i, units[i])}", units[i].backward, d, caches[i], i > 0)
            grads = [g[k] for layer, g in zip(model.layers, [g for gs in per_unit for g in gs]) for k in layer.params]
            timed("adam", opt.apply, model.parameters(), grads)
        times.setdefault("step", []).append(time.perf_counter() - start)

    print(f"{wl.label}, native kernels {native.status()}, median of {args.steps} steps:")
    for name, values in times.items():
        print(f"  {name:48s} {statistics.median(values[args.warmup :]) * 1e3:8.3f} ms")


if __name__ == "__main__":
    main()
