"""Data-parallel scaling of the reference training step on this machine: 1 vs 2 MPI ranks.

    python benchmarks/bench_distributed.py            # launches itself under mpiexec -n 1 and -n 2
    python benchmarks/bench_distributed.py --steps 20 --batches 64 256 1024

Strong scaling keeps the global batch and splits it over the ranks; weak scaling keeps each rank's
batch (the global batch grows with the ranks). A step is what `fit(distributed=True)` runs: forward
and backward on the rank's slice, one all-reduce of the flat gradient buffer, the Adam update.
Also reported: the all-reduce's bytes and time per step. There is no peer library here; the baseline
is one xpnn process, with 1 and with 2 BLAS threads (this machine has 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """Under mpiexec: time the step for every (mode, batch); rank 0 prints one JSON line per result."""
    import xpnn
    from xpnn.distributed import DataParallel
    from xpnn.reference import reference_model, reference_optimizer

    parallel = DataParallel()
    world = parallel.connect()
    loss = xpnn.get_loss("softmax_cross_entropy")
    backend = xpnn.get_backend()
    rng = np.random.default_rng(world.rank)
    for mode in ("strong", "weak") if world.size > 1 else ("strong",):  # one rank: weak is strong
        for batch in args.batches:
            global_batch = batch if mode == "strong" else batch * world.size
            local = len(xpnn.distributed.shard(np.arange(global_batch), world.rank, world.size))
            x = backend.asarray(rng.random((local, 64, 64, 3), dtype=np.float32))
            y = backend.asarray(np.eye(6, dtype=np.float32)[rng.integers(0, 6, local)])
            model, opt = reference_model("float32", seed=1), reference_optimizer()
            times, reduce_times = [], []
            for i in range(args.warmup + args.steps):
                world.comm.Barrier()
                start = time.perf_counter()
                result = parallel.run_pass(model, x, y, loss, global_batch, False)
                opt.apply(model.parameters(), result.grads)
                backend.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - start)
            buf = backend.xp.zeros(sum(int(p.size) for p in model.parameters()) + 1, dtype=np.float32)
            for i in range(args.warmup + args.steps):
                world.comm.Barrier()
                start = time.perf_counter()
                parallel.reducer.allreduce_sum(buf, "the benchmark")
                if i >= args.warmup:
                    reduce_times.append(time.perf_counter() - start)
            step = float(np.median(times))
            if world.is_root:
                row = {
                    "ranks": world.size,
                    "threads": os.environ.get("OMP_NUM_THREADS", "?"),
                    "mode": mode,
                    "global_batch": global_batch,
                    "rank_batch": local,
                    "step_ms": step * 1e3,
                    "steps_per_s": 1.0 / step,
                    "samples_per_s": global_batch / step,
                    "allreduce_bytes": int(buf.nbytes),
                    "allreduce_us": float(np.median(reduce_times)) * 1e6,
                }
                print(json.dumps(row), flush=True)


def launch(ranks: int, threads: int, argv: list[str]) -> list[dict]:
    """Run this script's worker under `mpiexec -n ranks` with `threads` BLAS threads per rank."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    mpiexec = shutil.which("mpiexec", path=search)
    if mpiexec is None:
        raise SystemExit('mpiexec not found: pip install -e ".[mpi]"')
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    cmd = [mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    argv = ["--batches", *map(str, args.batches), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    rows = launch(1, 1, argv) + launch(1, 2, argv) + launch(2, 1, argv)
    base = {r["global_batch"]: r for r in rows if r["ranks"] == 1 and r["threads"] == "1"}
    print(f"{'mode':<7}{'ranks x threads':>16}{'global':>8}{'/rank':>7}{'step ms':>10}{'steps/s':>9}"
          f"{'samples/s':>11}{'vs 1x1':>8}{'allreduce B':>13}{'allreduce us':>14}")  # fmt: skip
    for r in rows:
        key = r["rank_batch"] if r["mode"] == "weak" else r["global_batch"]
        ratio = r["samples_per_s"] / base[key]["samples_per_s"]
        print(f"{r['mode']:<7}{str(r['ranks']) + ' x ' + r['threads']:>16}{r['global_batch']:>8}{r['rank_batch']:>7}"
              f"{r['step_ms']:>10.1f}{r['steps_per_s']:>9.2f}{r['samples_per_s']:>11.0f}{ratio:>8.2f}"
              f"{r['allreduce_bytes']:>13}{r['allreduce_us']:>14.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
