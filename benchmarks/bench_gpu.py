"""xpnn on CuPy against PyTorch CUDA (eager, and torch.compile where it works), in one process, as ratios.

    python benchmarks/bench_gpu.py            # on a GPU machine (ci/gpu runs it)
    python benchmarks/bench_gpu.py --smoke    # tiny sizes on NumPy + PyTorch CPU: checks the script itself

PyTorch is the peer (`pip install -e ".[gpu-bench]"`); without it the peer columns are left empty, with a note.

Workloads: the whole 25-epoch SIGNS run (wall time, cost curves side by side, the same initial weights
and minibatch order on both sides), the training step at batch 64, 1024 and 8192 (images/s), a wider
variant (32/64 filters, 3x3), and peak device memory. Writes the table to docs/benchmarks_gpu.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

try:
    import torch
    import torch.nn.functional as F
    from torch_twin import torch_adam, torch_twin
except ImportError as exc:  # the peer is optional: xpnn's own figures still come out
    torch = None
    NO_PEER = f"PyTorch is not installed ({exc}); peer columns skipped. Install it: pip install -e '.[gpu-bench]'"
else:
    NO_PEER = ""

import xpnn  # noqa: E402
from xpnn.data.batches import epoch_batches  # noqa: E402
from xpnn.reference import reference_model, reference_optimizer  # noqa: E402


def wide_model(dtype: str, seed: int) -> xpnn.Sequential:
    """The reference network with 32 and 64 filters of 3x3."""
    layers = [
        xpnn.Conv2D(32, 3, padding="same"), xpnn.ReLU(), xpnn.MaxPool2D(8, strides=8, padding="same"),
        xpnn.Conv2D(64, 3, padding="same"), xpnn.ReLU(), xpnn.MaxPool2D(4, strides=4, padding="same"),
        xpnn.Flatten(), xpnn.Dense(6),
    ]  # fmt: skip
    return xpnn.Sequential(layers, dtype=dtype).build((64, 64, 3), seed=seed)


class Sides:
    """The two contenders on one device, with a clock that waits for queued work."""

    def __init__(self, smoke: bool):
        self.backend = xpnn.set_backend("numpy" if smoke else "cupy")
        self.device = "cpu" if smoke else "cuda"
        self.peer = torch is not None and (smoke or torch.cuda.is_available())
        if torch is not None and not self.peer:  # a CPU-only wheel, or one built for a newer driver
            global NO_PEER
            NO_PEER = f"PyTorch {torch.__version__} sees no CUDA device; peer columns skipped"

    def sync(self) -> None:
        self.backend.synchronize()
        if self.device == "cuda" and self.peer:
            torch.cuda.synchronize()

    def median_seconds(self, step, reps: int, warmup: int = 3) -> float:
        for _ in range(warmup):
            step()
        self.sync()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            step()
            self.sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def reset_peak(self) -> None:
        if self.backend.name == "cupy":
            self.backend.xp.get_default_memory_pool().free_all_blocks()
        if self.device == "cuda" and self.peer:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peaks(self) -> tuple[float, float]:
        """MiB held: CuPy's pool (it keeps its high-water mark) and PyTorch's max reserved."""
        xp_mib = self.backend.xp.get_default_memory_pool().total_bytes() / 2**20 if self.backend.name == "cupy" else 0
        torch_mib = torch.cuda.max_memory_reserved() / 2**20 if self.device == "cuda" and self.peer else 0
        return xp_mib, torch_mib


def xpnn_step(model, x, y):
    """One training step on device-resident data, no host synchronisation."""
    opt, loss = reference_optimizer(), xpnn.get_loss("softmax_cross_entropy")

    def step():
        result = model.run_pass(x, y, loss)
        opt.apply(model.parameters(), result.grads)

    return step


def torch_step(net, opt, x, y):
    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    return step


def bench_steps(sides: Sides, batches: list[int], reps: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for name, make in (("reference", reference_model), ("wide 32/64", wide_model)):
        for batch in batches:
            x_host = rng.random((batch, 64, 64, 3), dtype=np.float32)
            y_host = rng.integers(0, 6, batch)
            model = make("float32", 1)
            x, y = model._prepare(x_host, y_host)
            row = {"workload": f"{name} step, batch {batch}", "eager": None, "compile": None}
            sides.reset_peak()
            row["xpnn"] = sides.median_seconds(xpnn_step(model, x, y), reps)
            row["xpnn_mib"], row["torch_mib"] = sides.peaks()
            if sides.peer:
                bench_peer_step(sides, row, model, x_host, y_host, reps)
            row["images"] = batch
            rows.append(row)
            print(_format_row(row), flush=True)
    return rows


def bench_peer_step(sides: Sides, row: dict, model, x_host: np.ndarray, y_host: np.ndarray, reps: int) -> None:
    """PyTorch eager and torch.compile on the same step as `model`'s, into `row`."""
    net = torch_twin(model, sides.device)
    xt = torch.from_numpy(x_host).permute(0, 3, 1, 2).contiguous().to(sides.device)
    yt = torch.from_numpy(y_host).to(sides.device)
    sides.reset_peak()
    row["eager"] = sides.median_seconds(torch_step(net, torch_adam(net, reference_optimizer()), xt, yt), reps)
    row["torch_mib"] = sides.peaks()[1]
    try:
        compiled = torch.compile(net)
        row["compile"] = sides.median_seconds(
            torch_step(compiled, torch_adam(net, reference_optimizer()), xt, yt), reps
        )
    except Exception as exc:  # noqa: BLE001 - report, don't fake
        row["note"] = f"torch.compile failed: {type(exc).__name__}"


def bench_full_run(sides: Sides, epochs: int, data) -> dict:
    """25 epochs each, same initial weights and batch order; cost per epoch side by side."""
    (x_train, y_train), _ = data
    model = reference_model("float32", seed=1)
    if not sides.peer:
        sides.sync()
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=epochs, batch_size=64, optimizer=reference_optimizer(), seed=1, verbose=0)
        sides.sync()
        return {"workload": f"SIGNS run, {epochs} epochs", "xpnn": time.perf_counter() - start, "eager": None}
    net = torch_twin(model, sides.device)
    opt = torch_adam(net, reference_optimizer())
    xt = torch.from_numpy(x_train.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous().to(sides.device)
    yt = torch.from_numpy(y_train).to(sides.device)
    sides.sync()
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=epochs, batch_size=64, optimizer=reference_optimizer(), seed=1,
                        verbose=0)  # fmt: skip
    sides.sync()
    xpnn_s = time.perf_counter() - start
    rng = np.random.default_rng(1)
    torch_costs = []
    start = time.perf_counter()
    for _ in range(epochs):
        total = torch.zeros((), device=sides.device)
        for idx in epoch_batches(len(x_train), 64, "random", rng):
            i = torch.from_numpy(idx).to(sides.device)
            opt.zero_grad(set_to_none=True)
            cost = F.cross_entropy(net(xt[i]), yt[i])
            cost.backward()
            opt.step()
            total += cost.detach() * len(idx)
        torch_costs.append(total)
    torch_costs = [float(c) / len(x_train) for c in torch_costs]
    sides.sync()
    torch_s = time.perf_counter() - start
    for epoch, (a, b) in enumerate(zip(history.history["loss"], torch_costs), start=1):
        if epoch % 5 == 0 or epoch == 1:
            print(f"  epoch {epoch:3d}  cost xpnn {a:.4f}  torch {b:.4f}")
    return {"workload": f"SIGNS run, {epochs} epochs", "xpnn": xpnn_s, "eager": torch_s, "compile": None}


def _format_row(row: dict) -> str:
    text = f"{row['workload']:<32} xpnn {row['xpnn'] * 1e3:9.2f} ms"
    if row.get("eager") is None:
        return text + "  (no peer)"
    text += f"  eager {row['eager'] * 1e3:9.2f} ms  ratio {row['xpnn'] / row['eager']:.2f}"
    if row.get("compile"):
        text += f"  compile {row['compile'] * 1e3:9.2f} ms  ratio {row['xpnn'] / row['compile']:.2f}"
    return text


def write_table(rows: list[dict], path: Path, device: str) -> None:
    note = f" {NO_PEER}." if NO_PEER else ""
    lines = [
        "# GPU benchmarks", "", f"Device: {device}. Command: `python benchmarks/bench_gpu.py`.{note}", "",
        "| workload | xpnn ms | torch eager ms | xpnn/eager | torch.compile ms | xpnn/compile "
        "| images/s xpnn | MiB xpnn | MiB torch |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for r in rows:
        comp, eager = r.get("compile"), r.get("eager")
        ips = f"{r['images'] / r['xpnn']:.0f}" if "images" in r else ""
        eager_ms, eager_ratio = (eager * 1e3, r["xpnn"] / eager) if eager else (float("nan"), float("nan"))
        lines.append(
            f"| {r['workload']} | {r['xpnn'] * 1e3:.2f} | {eager_ms:.2f} | {eager_ratio:.2f} | "
            f"{comp * 1e3 if comp else float('nan'):.2f} | {r['xpnn'] / comp if comp else float('nan'):.2f} | {ips} | "
            f"{r.get('xpnn_mib', 0):.0f} | {r.get('torch_mib', 0):.0f} |"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on NumPy + PyTorch CPU")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default="docs/benchmarks_gpu.md")
    args = parser.parse_args()
    sides = Sides(args.smoke)
    batches = [8] if args.smoke else [64, 1024, 8192]
    reps = 2 if args.smoke else args.reps
    epochs = 1 if args.smoke else args.epochs
    if args.smoke:
        device = "CPU (smoke)"
    else:
        device = sides.backend.xp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    peer = f"torch {torch.__version__}" if sides.peer else NO_PEER
    print(f"device {device}, {peer}, python {platform.python_version()}")
    rows = bench_steps(sides, batches, reps)
    folder = xpnn.datasets.find_signs()
    data = xpnn.datasets.load_signs(folder) if folder else xpnn.datasets.load_embedded()
    if args.smoke:
        (x, y), test = data
        data = ((x[:64], y[:64]), test)
    row = bench_full_run(sides, epochs, data)
    print(_format_row(row))
    rows.append(row)
    write_table(rows, Path(args.out) if not args.smoke else Path("/tmp/benchmarks_gpu_smoke.md"), device)


if __name__ == "__main__":
    main()
