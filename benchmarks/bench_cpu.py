"""xpnn vs PyTorch and TensorFlow on the CPU: the same networks, batches, dtype and threads, in one process.

    python benchmarks/bench_cpu.py                 # every workload but (e): timings, GFLOP/s and peak RSS
    python benchmarks/bench_cpu.py --suite classic # the classic networks only (LeNet-5, VGG-style, ...)
    python benchmarks/bench_cpu.py --signs         # also (e), a whole 25-epoch SIGNS run

Timing: every framework is warmed up, then the frameworks take turns (per round, after a short pause
and untimed calls for at least WARM_SECONDS, a block of 5 timed calls each, the starting one rotating:
steady state, as in a training loop), and each reports the median over all its timed calls. Ratios xpnn/peer come from
the same rounds, so machine noise hits all alike. GFLOP/s counts the convs' and dense layers' multiply-adds
(`workloads.flops`) against the machine's fp32 peak (`fp32_peak`). Peak RSS: each (framework, workload) runs again in
a fresh subprocess that imports only that framework, resets the kernel's high-water mark
(`/proc/self/clear_refs` ← 5) once the data is made, and reports VmHWM minus the RSS at that point.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]  # this checkout's xpnn, and the sibling modules

FRAMEWORKS = ("xpnn", "xpnn-twin", "torch", "tf")  # xpnn-twin: xpnn with XPNN_NATIVE=0 (benchmarks/peers.py)
IMPORTS = {"xpnn": "xpnn", "xpnn-twin": "xpnn", "torch": "torch", "tf": "tensorflow"}


def limit_threads(threads: int, spin: bool = False) -> None:
    """Cap BLAS/OpenMP pools before any framework starts its own.

    Unless `spin`, idle workers sleep instead of spinning: OpenBLAS's spin for about 2^28 cycles after
    each call (OPENBLAS_THREAD_TIMEOUT=4 makes it 2^4) and OpenMP's per OMP_WAIT_POLICY (PASSIVE). On a
    busy machine a spinning worker takes the core that the main thread needs; xpnn's step was 5x slower
    here with OpenBLAS's default. Both are read once, when NumPy and PyTorch load.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    if not spin:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass


def available(frameworks: list[str], threads: int) -> dict[str, str]:
    """{framework: version} for those that import; a missing peer is reported and left out."""
    import importlib

    from peers import set_threads

    found = {}
    for fw in frameworks:
        try:
            mod = importlib.import_module(IMPORTS[fw])
        except ImportError as exc:
            print(f"# {fw} is not available ({exc}); it is left out", flush=True)
            continue
        set_threads(fw, threads)
        found[fw] = getattr(mod, "__version__", "?")
    return found


def workload_data(wl):
    from workloads import signs_train, synthetic_batch

    if wl.kind == "signs":
        return signs_train()
    return synthetic_batch(wl.batch, wl.net.input_shape, wl.net.classes)


BLOCK = 5  # timed calls in a row per framework and round: steady state, as in a training loop
# Untimed calls after each pause, at least 1 and for at least this long. On the 2-core VM of docs/benchmarks.md,
# xpnn's batch-64 step took ~12 ms for the first 5 calls after a 0.2 s pause and ~8 ms from the 6th on (the
# host ramps an idle vCPU back up); one untimed call left the whole timed block inside that ramp.
WARM_SECONDS = 0.1


def time_call(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure(wl, frameworks: list[str], budget: float, min_reps: int, max_reps: int, signs_reps: int, gap: float):
    """{framework: [seconds per call]} from interleaved rounds after a warm-up."""
    from peers import RUNNERS

    data = workload_data(wl)
    if data is None:
        return None
    runners = {fw: RUNNERS[fw](wl, *data) for fw in frameworks}
    warm = {}
    for fw, run in runners.items():
        if wl.kind == "signs":
            run(epochs=1)
            warm[fw] = 0.0
            continue
        for _ in range(3):
            run()
        warm[fw] = statistics.median(time_call(run) for _ in range(3))
    if wl.kind == "signs":
        reps = signs_reps
    else:
        reps = int(min(max_reps, max(min_reps, budget / max(sum(warm.values()), 1e-6))))
    times: dict[str, list[float]] = {fw: [] for fw in frameworks}
    block = 1 if wl.kind == "signs" else BLOCK
    for r in range(-(-reps // block)):
        order = frameworks[r % len(frameworks) :] + frameworks[: r % len(frameworks)]
        for fw in order:
            time.sleep(gap)  # let the previous framework's spinning worker threads go idle
            if wl.kind != "signs":  # untimed calls: training runs step after step, never right after a pause
                warm_until = time.perf_counter() + WARM_SECONDS
                runners[fw]()
                while time.perf_counter() < warm_until:
                    runners[fw]()
            times[fw].extend(time_call(runners[fw]) for _ in range(block))
    return times


def rss_child(fw: str, key: str, threads: int) -> None:
    """Run one workload of one framework and print its peak RSS growth as JSON (see the module docstring)."""
    limit_threads(threads, spin=True)  # the parent's environment, already set
    available([fw], threads)
    from peers import RUNNERS
    from workloads import WORKLOADS

    wl = next(w for w in WORKLOADS if w.key == key)
    data = workload_data(wl)
    base = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    run = RUNNERS[fw](wl, *data)
    for _ in range(1 if wl.kind == "signs" else 5):
        run(epochs=1) if wl.kind == "signs" else run()
    peak = _status_kib("VmHWM")
    print(json.dumps({"growth_mib": (peak - base) / 1024, "peak_mib": peak / 1024}))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss(fw: str, key: str, threads: int) -> float | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", fw, key, "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)["growth_mib"]
    print(f"# peak RSS for {fw} {key} failed: {proc.stderr.strip()[-300:]}", flush=True)
    return None


def fp32_peak(ghz: float | None = None) -> tuple[float, str]:
    """This machine's fp32 peak in GFLOP/s, and the assumption behind it.

    cores × FMA units × vector lanes × 2 (a multiply-add is 2 flops) × GHz: lanes from the CPU flags
    (16 with AVX-512F, 8 with AVX2, 4 otherwise), 2 FMA units per core (Intel since Haswell, AMD since
    Zen 2; Zen 5 and Intel's server parts with AVX-512 do 2 full 512-bit FMAs), the clock /proc/cpuinfo
    reports (a VM shows the nominal one, and boost may run above it; `ghz` overrides it), the cores this
    process may use. On the AMD EPYC VM of docs/benchmarks.md the nominal clock is 2.6 GHz, but one core's
    SGEMM (OpenBLAS SkylakeX kernels) reached 230 GFLOP/s = 2 × 16 × 2 × 3.6 GHz: it boosts.
    """
    flags, mhz = set(), 0.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma = 2 if "fma" in flags else 1
    cores = len(os.sched_getaffinity(0))
    mhz = ghz * 1000 if ghz else mhz
    peak = cores * fma * lanes * 2 * mhz / 1000
    return peak, f"{cores} cores x {fma} FMA units x {lanes} fp32 lanes x 2 x {mhz / 1000:.2f} GHz = {peak:.0f} GFLOP/s"


def machine(versions: dict[str, str], threads: int, ghz: float | None = None) -> list[str]:
    import numpy

    from xpnn.backends import native

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = "?"
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{p['internal_api']} {p['version']} ({p.get('architecture', '?')}, {p['num_threads']} threads)"
            for p in threadpool_info()
            if p["user_api"] == "blas" and "numpy" in p["filepath"]
        )
    except ImportError:
        pass
    lines = [
        f"- CPU: {cpu}; {os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable); {platform.platform()}",
        f"- Python {platform.python_version()}; NumPy {numpy.__version__}; NumPy's BLAS: {blas}",
        f"- xpnn's native kernels (xpnn/backends/native.c): {native.status()}",
        f"- fp32 peak (assumed): {fp32_peak(ghz)[1]}",
        "- Peers: " + ", ".join(f"{fw} {v}" for fw, v in versions.items() if not fw.startswith("xpnn")),
        f"- Threads: {threads} for every framework (threadpoolctl + OMP/OPENBLAS_NUM_THREADS for NumPy; "
        "torch.set_num_threads; tf.config.threading intra/inter-op); "
        f"OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'default')}, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}",
    ]
    return lines


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    ap.add_argument("--workloads", nargs="+", default=None, help="keys, e.g. a c vgg-train64 (default all but e)")
    ap.add_argument("--suite", choices=("reference", "classic"), default=None, help="only this suite's workloads")
    ap.add_argument("--signs", action="store_true", help="also run (e), the 25-epoch SIGNS run (minutes)")
    ap.add_argument("--signs-reps", type=int, default=2)
    ap.add_argument("--budget", type=float, default=20.0, help="seconds of timed rounds per workload")
    ap.add_argument("--min-reps", type=int, default=10)
    ap.add_argument("--max-reps", type=int, default=200)
    ap.add_argument("--gap", type=float, default=0.2, help="seconds of sleep before each timed call")
    ap.add_argument("--spin", action="store_true", help="keep the libraries' spinning idle workers (see limit_threads)")
    ap.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    ap.add_argument("--peak-ghz", type=float, default=None, help="clock for the fp32 peak (default: /proc/cpuinfo)")
    ap.add_argument("--rss-child", nargs=2, metavar=("FRAMEWORK", "WORKLOAD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child, args.threads)
        return

    limit_threads(args.threads, args.spin)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from workloads import PENDING, SUITES, WORKLOADS, flops

    versions = available(args.frameworks, args.threads)
    frameworks = [fw for fw in args.frameworks if fw in versions]
    keys = args.workloads or [w.key for w in WORKLOADS if w.kind != "signs" or args.signs]
    if args.suite:
        keys = [k for k in keys if k in SUITES[args.suite]]
    unknown = set(keys) - {w.key for w in WORKLOADS}
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}; choose from {[w.key for w in WORKLOADS]}")
    peak = fp32_peak(args.peak_ghz)[0]
    print("\n".join(machine(versions, args.threads, args.peak_ghz)), flush=True)

    peers = [fw for fw in frameworks if not fw.startswith("xpnn")]
    head = ["workload", *(f"{fw} ms" for fw in frameworks)]
    if "xpnn" in frameworks:
        head += [f"xpnn/{fw}" for fw in peers] + (["xpnn/faster peer"] if peers else [])
    if "xpnn-twin" in frameworks and peers:
        head.append("xpnn-twin/faster peer")
    head += ["GFLOP"] + [f"{fw} GFLOP/s (% peak)" for fw in frameworks if fw in ("xpnn", *peers)]
    head += [f"{fw} peak RSS MiB" for fw in frameworks] + ["rounds"]
    rows = []
    for wl in [w for w in WORKLOADS if w.key in keys]:
        times = measure(wl, frameworks, args.budget, args.min_reps, args.max_reps, args.signs_reps, args.gap)
        if times is None:
            print(f"# {wl.label}: SIGNS not found, skipped", flush=True)
            continue
        med = {fw: statistics.median(t) * 1000 for fw, t in times.items()}
        row = [wl.label, *(fmt(med[fw]) for fw in frameworks)]
        if "xpnn" in frameworks:
            row += [f"{med['xpnn'] / med[fw]:.2f}" for fw in peers]
            if peers:
                row.append(f"{med['xpnn'] / min(med[fw] for fw in peers):.2f}")
        if "xpnn-twin" in frameworks and peers:
            row.append(f"{med['xpnn-twin'] / min(med[fw] for fw in peers):.2f}")
        gflop = flops(wl) / 1e9
        row.append(f"{gflop:.2f}")
        for fw in (f for f in frameworks if f in ("xpnn", *peers)):
            rate = gflop / (med[fw] / 1000)
            row.append(f"{rate:.0f} ({100 * rate / peak:.0f} %)" if peak else f"{rate:.0f}")
        rss = {fw: None if args.no_rss else peak_rss(fw, wl.key, args.threads) for fw in frameworks}
        row += [fmt(rss[fw], 0) for fw in frameworks] + [str(len(times[frameworks[0]]))]
        rows.append(row)
        print("# " + " | ".join(row), flush=True)
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.suite != "reference":
        print("\n" + "\n".join(f"Pending: {item}" for item in PENDING))


if __name__ == "__main__":
    main()
