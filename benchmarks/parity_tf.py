"""Curve parity with TensorFlow: 25 epochs of Adam on SIGNS, step by step, and the mistakes that learn ~4x slower.

    python benchmarks/parity_tf.py              # needs TensorFlow (pip install -e ".[tf]") and SIGNS
    python benchmarks/parity_tf.py --epochs 5   # a quicker look

Both sides start from TensorFlow's Glorot weights (the reference net, built with tf.keras in float64), see the
same minibatches in the same order (one seeded permutation per epoch, batch 64, the last batch partial) and take
one update per minibatch: xpnn with `train_on_batch`, TensorFlow with a tf.function step (GradientTape, then
its ApplyAdam kernel, lr 0.009, β1 0.9, β2 0.999, ε 1e-8). Prints the per-step cost difference; writes
docs/parity.md and docs/parity.png.

Then it reproduces the seed's symptom, a curve ~4x slower than TensorFlow's, with variant optimizers and losses
(defined here, never in the package): Adam in the paper's form, a summed batch cost, bias-correction slips and
mis-scaled learning rates, each measured as steps to reach a smoothed cost of 1.0 relative to correct Adam.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import xpnn  # noqa: E402
from xpnn.backends import get_backend  # noqa: E402
from xpnn.losses import Loss, softmax_cross_entropy  # noqa: E402
from xpnn.optimizers import Adam, Optimizer  # noqa: E402
from xpnn.reference import BATCH_SIZE, EPOCHS, LEARNING_RATE, reference_layers  # noqa: E402

try:
    import tensorflow as tf  # noqa: E402
    from make_tf_fixtures import REFERENCE, keras_layer  # noqa: E402
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit('parity_tf.py needs TensorFlow: pip install -e ".[tf]" (tensorflow-cpu==2.21.0).')

TARGET_COST = 1.5  # "learned": the mean cost of the last SMOOTH steps reaches this (correct Adam: ~epoch 7-8)
SMOOTH = 16  # one epoch of SIGNS at batch 64


# ---- TensorFlow side ----------------------------------------------------------------------------------
class TFRun:
    """The reference net in tf.keras at `dtype`, trained with TF's ApplyAdam kernel one minibatch at a time."""

    def __init__(self, dtype: str, weights: list[np.ndarray] | None = None, seed: int = 1) -> None:
        self.dtype = tf.as_dtype(dtype)
        self.layers = [keras_layer(spec, seed * 100 + i, dtype) for i, spec in enumerate(REFERENCE)]
        h = tf.zeros((1, 64, 64, 3), self.dtype)
        for layer in self.layers:
            h = layer(h)
        self.vars = [v for layer in self.layers for v in layer.trainable_variables]
        if weights is not None:
            for v, w in zip(self.vars, weights):
                v.assign(tf.constant(w, self.dtype))
        self.m = [tf.Variable(tf.zeros_like(v)) for v in self.vars]
        self.v = [tf.Variable(tf.zeros_like(v)) for v in self.vars]
        self.t = tf.Variable(0.0, dtype=self.dtype)
        self.step = tf.function(self._step, reduce_retracing=True)

    def _step(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            h = x
            for layer in self.layers:
                h = layer(h)
            cost = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=y, logits=h))
        grads = tape.gradient(cost, self.vars)
        self.t.assign_add(1.0)
        c = lambda value: tf.constant(value, self.dtype)  # noqa: E731
        b1, b2 = c(0.9), c(0.999)
        for var, g, m, v in zip(self.vars, grads, self.m, self.v):
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=tf.pow(b1, self.t),
                beta2_power=tf.pow(b2, self.t),
                lr=c(LEARNING_RATE),
                beta1=b1,
                beta2=b2,
                epsilon=c(1e-8),
                grad=g,
            )
        return cost

    def weights(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.vars]

    def train(self, x: np.ndarray, y: np.ndarray, batches: list[np.ndarray]) -> np.ndarray:
        xt, yt = tf.constant(x, self.dtype), tf.constant(y, self.dtype)
        return np.array([float(self.step(tf.gather(xt, idx), tf.gather(yt, idx))) for idx in batches])


# ---- xpnn side, and the mistakes ---------------------------------------------------------------------
class VariantAdam(Optimizer):
    """Adam with one plausible slip, for the slow-curve experiment (the package's Adam is TF's, exactly).

    form="paper": m̂/(√v̂+ε) with separate bias corrections (Kingma & Ba, Algorithm 1).
    correction="none": no bias correction; "frozen": t stays 1, so alpha = lr·√(1−β2)/(1−β1) forever.
    """

    def __init__(self, learning_rate: float = LEARNING_RATE, form: str = "tf", correction: str = "tf") -> None:
        self.lr, self.form, self.correction = learning_rate, form, correction
        self.b1, self.b2, self.eps, self.t = 0.9, 0.999, 1e-8, 0
        self.m: list = []
        self.v: list = []

    def apply(self, params: list, grads: list) -> None:
        xp = get_backend().xp
        if not self.m:
            self.m = [xp.zeros_like(w) for w in params]
            self.v = [xp.zeros_like(w) for w in params]
        self.t += 1
        t = 1 if self.correction == "frozen" else self.t
        fix1, fix2 = (1.0, 1.0) if self.correction == "none" else (1.0 - self.b1**t, 1.0 - self.b2**t)
        for w, g, m, v in zip(params, grads, self.m, self.v):
            m += (g - m) * (1.0 - self.b1)
            v += (g * g - v) * (1.0 - self.b2)
            if self.form == "paper":
                w -= self.lr * (m / fix1) / (xp.sqrt(v / fix2) + self.eps)
            else:
                w -= m * (self.lr * math.sqrt(fix2) / fix1) / (xp.sqrt(v) + self.eps)


class SummedCost(Loss):
    """The batch cost summed over samples instead of averaged (gradients n times larger)."""

    name = "summed_softmax_cross_entropy"

    def __call__(self, logits, labels):
        cost, dlogits = softmax_cross_entropy(logits, labels)
        n = float(logits.shape[0])
        return cost * n, dlogits * n


def xpnn_run(
    dtype: str,
    weights: list[np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    batches: list[np.ndarray],
    stop_at: float | None = None,
    **variant,
) -> np.ndarray:
    """Per-step costs of xpnn's reference net from `weights`, one train_on_batch per minibatch.

    With `stop_at`, training ends once the mean cost of the last SMOOTH steps reaches it.
    """
    model = xpnn.Sequential(reference_layers(), dtype=dtype).build((64, 64, 3), seed=0)
    model.set_weights(weights)
    opt = variant.get("optimizer") or Adam(LEARNING_RATE, 0.9, 0.999, 1e-8)
    loss = variant.get("loss") or "softmax_cross_entropy"
    xb = np.asarray(x, dtype=dtype)
    yb = np.asarray(y, dtype=dtype)
    costs: list[float] = []
    for idx in batches:
        cost = model.train_on_batch(xb[idx], yb[idx], optimizer=opt, loss=loss)
        costs.append(cost / len(idx) if isinstance(loss, SummedCost) else cost)  # report the mean cost
        if stop_at is not None and len(costs) >= SMOOTH and np.mean(costs[-SMOOTH:]) <= stop_at:
            break
    return np.array(costs)


def steps_to(costs: np.ndarray, target: float = TARGET_COST, window: int = SMOOTH) -> int | None:
    """First step (from 1) at which the mean of the last `window` step costs is ≤ target, or None."""
    smooth = np.convolve(costs, np.ones(window) / window, mode="valid")
    hit = np.nonzero(smooth <= target)[0]
    return int(hit[0]) + window if hit.size else None


MISTAKES = {
    "Adam in the paper's form (m̂/(√v̂+ε))": {"optimizer": lambda: VariantAdam(form="paper")},
    "summed batch cost (Σ instead of mean)": {"loss": SummedCost},
    "bias correction left out": {"optimizer": lambda: VariantAdam(correction="none")},
    "bias correction frozen at t = 1": {"optimizer": lambda: VariantAdam(correction="frozen")},
    "learning rate / 4": {"optimizer": lambda: VariantAdam(LEARNING_RATE / 4)},
    "learning rate / batch size": {"optimizer": lambda: VariantAdam(LEARNING_RATE / BATCH_SIZE)},
}


# ---- report ------------------------------------------------------------------------------------------
def rel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.abs(b)


def plot(curves: dict[str, np.ndarray], diffs: dict[str, np.ndarray], path: Path) -> None:
    """Costs per step (top) and xpnn's relative difference from TF (bottom) into a PNG at `path`.

    TF's curve is drawn wide and pale underneath and xpnn's thin and dashed on top, so both stay visible where
    they coincide (everywhere, in float64); the title is two lines so it is never cut; legends are readable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), dpi=100, sharex=True, height_ratios=(3, 2))
    others = iter(["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"])
    for name, costs in curves.items():
        steps = np.arange(1, len(costs) + 1)
        if name.startswith("TF"):
            top.plot(steps, costs, lw=5, alpha=0.35, color="tab:orange", label=name, zorder=1)
        elif name.startswith("xpnn float64"):
            top.plot(steps, costs, lw=1.3, ls=(0, (4, 2)), color="tab:blue", label=name, zorder=3)
        else:
            top.plot(steps, costs, lw=1, alpha=0.8, color=next(others, None), label=name, zorder=2)
    top.axhline(TARGET_COST, color="grey", lw=0.8, ls=":", label=f"cost {TARGET_COST} (steps-to target)")
    top.set_ylabel("minibatch cost", fontsize=11)
    top.legend(fontsize=10, loc="lower right", framealpha=0.9)  # steps past 400: only the mistake curves
    top.grid(alpha=0.3)
    fig.suptitle(
        "xpnn vs TensorFlow on SIGNS: reference net, Adam lr 0.009, batch 64\n"
        "same initial weights and minibatch order on both sides",
        fontsize=12,
    )
    for name, d in diffs.items():
        bottom.semilogy(np.arange(1, len(d) + 1), np.maximum(d, 1e-17), lw=1, label=name)
    bottom.set_ylabel("|xpnn − TF| / |TF| (cost)", fontsize=11)
    bottom.set_xlabel("step", fontsize=11)
    bottom.legend(fontsize=10, loc="center right", framealpha=0.9)
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=1, help="TF weight seed and minibatch-order seed")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where parity.md and parity.png go")
    parser.add_argument("--no-mistakes", action="store_true", help="skip the slow-curve experiment")
    parser.add_argument("--costs", type=Path, help="also save every run's per-step costs to this .npz")
    parser.add_argument("--load-costs", type=Path, help="reuse the four parity runs saved by --costs")
    parser.add_argument(
        "--mistake-factor", type=int, default=2, help="mistake runs may go on for this many times --epochs"
    )
    args = parser.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    xpnn.set_backend("numpy")

    (x_u8, labels), _ = xpnn.datasets.load_signs()
    x = x_u8.astype(np.float64) / 255.0  # what xpnn's prepare_x does to uint8 images
    y = np.eye(6)[labels]
    rng = np.random.default_rng(args.seed)
    cuts = range(BATCH_SIZE, len(x), BATCH_SIZE)
    longer = args.epochs * args.mistake_factor
    all_batches = [b for _ in range(longer) for b in np.array_split(rng.permutation(len(x)), cuts)]
    batches = all_batches[: len(all_batches) * args.epochs // longer]
    print(f"SIGNS {x.shape}, {args.epochs} epochs, batch {BATCH_SIZE}: {len(batches)} steps")

    results: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    tf64 = TFRun("float64", seed=args.seed)
    init = tf64.weights()
    runs = {
        "TF float64": lambda: tf64.train(x, y, batches),
        "xpnn float64": lambda: xpnn_run("float64", init, x, y, batches),
        "TF float32": lambda: TFRun("float32", init, args.seed).train(x, y, batches),
        "xpnn float32": lambda: xpnn_run("float32", init, x, y, batches),
    }
    saved = np.load(args.load_costs) if args.load_costs else {}
    for name, run in runs.items():
        start = time.perf_counter()
        results[name] = saved[name] if name in saved else run()
        seconds[name] = time.perf_counter() - start
        print(f"{name:<14} {seconds[name]:6.1f} s  first cost {results[name][0]:.10f}  last {results[name][-1]:.10f}")

    d64 = rel_diff(results["xpnn float64"], results["TF float64"])
    d32 = rel_diff(results["xpnn float32"], results["TF float32"])
    d32_64 = rel_diff(results["xpnn float32"], results["TF float64"])
    dtf32 = rel_diff(results["TF float32"], results["TF float64"])
    print("\nstep   TF float64 cost     xpnn float64 cost   rel diff f64   rel diff f32 (xpnn32 vs TF32)")
    for i in range(len(batches)):
        if i < 5 or (i + 1) % 16 == 0:
            print(
                f"{i + 1:4d}  {results['TF float64'][i]:.15f}  {results['xpnn float64'][i]:.15f}"
                f"  {d64[i]:.2e}       {d32[i]:.2e}"
            )
    print(f"\nmax relative cost difference over all {len(batches)} steps:")
    print(f"  float64, xpnn vs TF:             {d64.max():.3e}")
    print(f"  float32, xpnn vs TF:             {d32.max():.3e}")
    print(f"  float32 xpnn vs float64 TF:      {d32_64.max():.3e}   (TF float32 vs float64: {dtf32.max():.3e})")

    mistakes: list[tuple[str, int | None, float]] = []
    mistake_curves: dict[str, np.ndarray] = {}
    correct = steps_to(results["xpnn float64"])
    if not args.no_mistakes:
        print(f"\nsteps to a smoothed cost of {TARGET_COST} (mean of {SMOOTH} steps), xpnn float32 from TF's weights:")
        base32 = steps_to(results["xpnn float32"])
        print(f"  {'correct Adam (TF form)':<42} {base32}")
        for name, variant in MISTAKES.items():
            made = {k: v() for k, v in variant.items()}
            start = time.perf_counter()
            costs = xpnn_run("float32", init, x, y, all_batches, stop_at=TARGET_COST, **made)
            hit = steps_to(costs)
            ratio = (hit / base32) if (hit and base32) else math.inf
            mistakes.append((name, hit, ratio))
            mistake_curves[name] = costs
            print(
                f"  {name:<42} {hit if hit else '>' + str(len(all_batches)):>5}  x{ratio:.2f}"
                f"  ({time.perf_counter() - start:.0f} s)"
            )
        correct = base32

    if args.costs:
        np.savez(args.costs, **results, **{f"mistake: {k}": v for k, v in mistake_curves.items()})
    args.docs.mkdir(parents=True, exist_ok=True)
    curves = {"TF float64": results["TF float64"], "xpnn float64": results["xpnn float64"]}
    curves["xpnn float32"] = results["xpnn float32"]
    for name in ("learning rate / 4", "bias correction frozen at t = 1"):
        if name in mistake_curves:
            curves[f"mistake: {name}"] = mistake_curves[name]
    plot(curves, {"float64 (xpnn vs TF)": d64, "float32 (xpnn vs TF)": d32}, args.docs / "parity.png")
    lines = [
        "# Curve parity with TensorFlow",
        "",
        "Written by `python benchmarks/parity_tf.py` "
        f"(TensorFlow {tf.__version__}; {args.epochs} epochs, {len(batches)} steps, seed {args.seed}).",
        "",
        "Both sides start from TensorFlow's Glorot weights and see the same minibatches in the same order.",
        "",
        "| comparison | max relative cost difference over all steps |",
        "| --- | --- |",
        f"| float64: xpnn vs TF | {d64.max():.2e} |",
        f"| float32: xpnn vs TF | {d32.max():.2e} |",
        f"| float32 xpnn vs float64 TF | {d32_64.max():.2e} |",
        f"| float32 TF vs float64 TF | {dtf32.max():.2e} |",
        "",
        f"Final minibatch cost: TF float64 {results['TF float64'][-1]:.12f}, xpnn float64 "
        f"{results['xpnn float64'][-1]:.12f}. Seconds: "
        + ", ".join(f"{k} {v:.0f}" if k not in saved else f"{k} (loaded)" for k, v in seconds.items())
        + ".",
    ]
    if mistakes:
        lines += [
            "",
            f"## Mistakes that slow learning (steps to a {SMOOTH}-step mean cost of {TARGET_COST}, float32)",
            "",
            "| variant | steps | x correct |",
            "| --- | --- | --- |",
            f"| correct Adam (TF's form) | {correct} | 1.00 |",
        ]
        lines += [
            f"| {n} | {h if h else f'> {len(all_batches)}'} | {r if h else len(all_batches) / correct:.2f}"
            f"{'' if h else ' (at least)'} |"
            for n, h, r in mistakes
        ]
    lines += ["", "![parity](parity.png)", ""]
    write_atomic(args.docs / "parity.md", "\n".join(lines))
    print(f"\nwrote {args.docs / 'parity.md'} and {args.docs / 'parity.png'}")


if __name__ == "__main__":
    main()
