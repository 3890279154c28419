"""xpnn's CPU paths of issue 16 on and off, interleaved in one process: what each network gains from them.

    python benchmarks/ab_cpu_paths.py                       # every classic network, train 64 and predict 128
    python benchmarks/ab_cpu_paths.py --nets vgg --rounds 20

"off" runs what xpnn ran before them: Conv2D as one im2col GEMM over the batch (conv.py's `conv2d_forward`),
Dense as one `@`, the pools' NumPy twins, no Conv2D → ReLU unit; "on" is the default. Both run in the same
process, alternating per round (the first one rotating), so a busy machine slows both alike; each cell is the
median of the rounds. The fused Conv2D → ReLU → MaxPool2D unit runs natively in both.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # before NumPy loads, as bench_cpu.py
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]


def switch(on: bool) -> None:
    """Turn the new CPU paths on or off (module attributes the layers read per call)."""
    from xpnn import cpu_threads
    from xpnn.backends import native
    from xpnn.layers import conv_chunks, dense, fused, pool

    conv_chunks.takes = ORIGINAL["takes"] if on else (lambda layer, x: False)
    dense.matmul = cpu_threads.matmul if on else (lambda a, b: a @ b)
    pool.native = native if on else types.SimpleNamespace(takes=lambda x: False)
    fused.ConvRelu.applies = ORIGINAL["applies"] if on else staticmethod(lambda *layers: False)


ORIGINAL: dict = {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=["lenet", "vgg", "allconv", "alexpool", "mlp"])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--calls", type=int, default=3, help="timed calls per round and variant")
    args = ap.parse_args()

    import workloads

    from xpnn.layers import conv_chunks, fused

    ORIGINAL.update(takes=conv_chunks.takes, applies=fused.ConvRelu.applies)
    nets = {"lenet": workloads.LENET, "vgg": workloads.VGG, "allconv": workloads.ALL_CONV}
    nets.update(alexpool=workloads.ALEXNET_POOLS, mlp=workloads.MLP)
    print("| network | call | off ms | on ms | on/off |\n|---|---|---|---|---|")
    for key in args.nets:
        for kind, batch in (("train", 64), ("predict", 128)):
            off, on = ab(nets[key], kind, batch, args.rounds, args.calls)
            print(f"| {nets[key].name} | {kind} {batch} | {off:.1f} | {on:.1f} | {on / off:.2f} |", flush=True)


def ab(net, kind: str, batch: int, rounds: int, calls: int) -> tuple[float, float]:
    """Median ms per call (off, on) of one network's training step or predict, interleaved."""
    import workloads
    from peers import xpnn_model

    from xpnn import get_backend, get_loss
    from xpnn.inputs import prepare_x, prepare_y

    model = xpnn_model(net)
    x, y = workloads.synthetic_batch(batch, net.input_shape, net.classes)
    backend = get_backend()
    xb = prepare_x(x, net.input_shape, model.dtype, backend)
    yb = prepare_y(y, batch, net.classes, model.dtype, backend)
    loss = get_loss("softmax_cross_entropy")

    def call() -> None:
        if kind == "train":
            model.run_pass(xb, yb, loss)
        else:
            model.predict(x, batch_size=batch)

    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            switch(on)
            call()  # untimed: buffers and caches of this variant
            start = time.perf_counter()
            for _ in range(calls):
                call()
            times[on].append((time.perf_counter() - start) / calls)
    switch(True)
    return statistics.median(times[False]) * 1e3, statistics.median(times[True]) * 1e3


if __name__ == "__main__":
    main()
