"""Write TensorFlow/Keras float64 truth for xpnn's optimizers, schedules, losses and metrics (needs TF + Keras 3).

    python scripts/make_tf_training_fixtures.py            # rewrites tests/fixtures/keras_*.h5
    python scripts/make_tf_training_fixtures.py --out DIR  # e.g. to check that a rerun gives the same numbers

keras_optimizers.h5  A few small random parameters and 6 steps of random gradients (root datasets w0, grads;
                     parameter shapes in attrs), and per case the weights after every step. References:
                     - "raw:<op>": TF's raw kernels (tf.raw_ops.ResourceApply*) on float64 variables, any
                       hyperparameters (Keras's own optimizers would round them through float32);
                     - "keras": keras.optimizers.* applied to float64 keras.Variables, with hyperparameters
                       that float32 holds exactly (0.875, 2**-20, ...), so Keras's casts change nothing;
                     - "formula": Keras 3's Nadam written out with float64 TF ops (Keras casts its 0.96 through
                       float32 in one place and not in the other; the script prints that gap).
keras_schedules.h5   keras.optimizers.schedules.* built from float64 values, at steps 0..40 and a few far ones.
keras_losses.h5      keras.losses.* (dtype float64) value and gradient (tf.GradientTape) for outputs/labels
                     sets, with and without sample weights; keras.metrics.* results with sample weights.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

SHAPES = [(3, 4), (4,), (2, 3)]
STEPS = 6
F64 = tf.float64


def split(flat: np.ndarray) -> list[np.ndarray]:
    out, at = [], 0
    for shape in SHAPES:
        size = int(np.prod(shape))
        out.append(flat[at : at + size].reshape(shape))
        at += size
    return out


def flat(arrays: list) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])


# ---- optimizers ------------------------------------------------------------------------------------
def run_raw(kind: str, args: dict, w0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Weights after each step from TF's raw ResourceApply* kernels (float64)."""
    ws = [tf.Variable(w, dtype=F64) for w in split(w0)]
    slots = [[tf.Variable(np.zeros_like(w), dtype=F64) for w in split(w0)] for _ in range(3)]
    c = {k: tf.constant(v, F64) for k, v in args.items() if isinstance(v, float)}
    out = []
    for t in range(1, STEPS + 1):
        for i, g in enumerate(split(grads[t - 1])):
            g = tf.constant(g, F64)
            var, a, b, d = ws[i].handle, slots[0][i].handle, slots[1][i].handle, slots[2][i].handle
            if kind == "GradientDescent":
                tf.raw_ops.ResourceApplyGradientDescent(var=var, alpha=c["learning_rate"], delta=g)
            elif kind == "KerasMomentum":
                tf.raw_ops.ResourceApplyKerasMomentum(
                    var=var, accum=a, lr=c["learning_rate"], grad=g, momentum=c["momentum"],
                    use_nesterov=args["nesterov"],
                )  # fmt: skip
            elif kind == "RMSProp":
                tf.raw_ops.ResourceApplyRMSProp(
                    var=var, ms=a, mom=b, lr=c["learning_rate"], rho=c["rho"], momentum=c["momentum"],
                    epsilon=c["epsilon"], grad=g,
                )  # fmt: skip
            elif kind == "CenteredRMSProp":
                tf.raw_ops.ResourceApplyCenteredRMSProp(
                    var=var, mg=d, ms=a, mom=b, lr=c["learning_rate"], rho=c["rho"], momentum=c["momentum"],
                    epsilon=c["epsilon"], grad=g,
                )  # fmt: skip
            elif kind == "Adam":
                tf.raw_ops.ResourceApplyAdam(
                    var=var, m=a, v=b, beta1_power=tf.constant(args["beta_1"] ** t, F64),
                    beta2_power=tf.constant(args["beta_2"] ** t, F64), lr=c["learning_rate"], beta1=c["beta_1"],
                    beta2=c["beta_2"], epsilon=c["epsilon"], grad=g,
                )  # fmt: skip
        out.append(flat([w.numpy() for w in ws]))
    return np.stack(out)


def keras_schedule(spec: dict):
    cls = getattr(keras.optimizers.schedules, spec["class_name"])
    return cls(**{k: np.float64(v) if isinstance(v, float) else v for k, v in spec["config"].items()})


def run_keras(cls_name: str, args: dict, w0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Weights after each step from keras.optimizers.<cls_name> on float64 variables."""
    kwargs = dict(args)
    if isinstance(kwargs.get("learning_rate"), dict):
        kwargs["learning_rate"] = keras_schedule(kwargs["learning_rate"])
    opt = getattr(keras.optimizers, cls_name)(**kwargs)
    ws = [keras.Variable(w, dtype="float64") for w in split(w0)]
    out = []
    for t in range(STEPS):
        opt.apply([tf.constant(g, F64) for g in split(grads[t])], ws)
        out.append(flat([w.numpy() for w in ws]))
    return np.stack(out)


def run_nadam_formula(args: dict, w0: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Keras 3's Nadam.update_step and _backend_update_step, in float64 TF ops with 0.96 exact."""
    lr, b1, b2, eps = (tf.constant(args[k], F64) for k in ("learning_rate", "beta_1", "beta_2", "epsilon"))
    ws = [tf.constant(w, F64) for w in split(w0)]
    ms = [tf.zeros_like(w) for w in ws]
    vs = [tf.zeros_like(w) for w in ws]
    u_product = tf.constant(1.0, F64)
    decay = tf.constant(0.96, F64)
    out = []
    for it in range(STEPS):
        local_step, next_step = tf.constant(it + 1, F64), tf.constant(it + 2, F64)
        u_product = u_product * b1 * (1.0 - 0.5 * tf.pow(decay, local_step))
        u_t = b1 * (1.0 - 0.5 * tf.pow(decay, local_step))
        u_t_1 = b1 * (1.0 - 0.5 * tf.pow(decay, next_step))
        u_product_t_1 = u_product * u_t_1
        beta_2_power = tf.pow(b2, local_step)
        for i, g in enumerate(split(grads[it])):
            g = tf.constant(g, F64)
            ms[i] = ms[i] + (g - ms[i]) * (1 - b1)
            vs[i] = vs[i] + (tf.square(g) - vs[i]) * (1 - b2)
            m_hat = (u_t_1 * ms[i]) / (1 - u_product_t_1) + ((1 - u_t) * g) / (1 - u_product)
            v_hat = vs[i] / (1 - beta_2_power)
            ws[i] = ws[i] - (m_hat * lr) / (tf.sqrt(v_hat) + eps)
        out.append(flat([w.numpy() for w in ws]))
    return np.stack(out)


EXACT = {"learning_rate": 0.0078125, "beta_1": 0.875, "beta_2": 0.96875, "epsilon": 2.0**-20}
OPTIMIZER_CASES = [
    # name, xpnn class, xpnn args, reference, reference kind/class, reference args
    ("sgd", "SGD", {"learning_rate": 0.009}, "raw", "GradientDescent", {"learning_rate": 0.009}),
    ("sgd_momentum", "SGD", {"learning_rate": 0.01, "momentum": 0.9}, "raw", "KerasMomentum",
     {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False}),
    ("sgd_nesterov", "SGD", {"learning_rate": 0.01, "momentum": 0.9, "nesterov": True}, "raw", "KerasMomentum",
     {"learning_rate": 0.01, "momentum": 0.9, "nesterov": True}),
    ("rmsprop", "RMSprop", {"learning_rate": 0.001}, "raw", "RMSProp",
     {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7}),
    ("rmsprop_momentum", "RMSprop", {"learning_rate": 0.003, "rho": 0.8, "momentum": 0.7}, "raw", "RMSProp",
     {"learning_rate": 0.003, "rho": 0.8, "momentum": 0.7, "epsilon": 1e-7}),
    ("rmsprop_centered", "RMSprop", {"learning_rate": 0.001, "centered": True}, "raw", "CenteredRMSProp",
     {"learning_rate": 0.001, "rho": 0.9, "momentum": 0.0, "epsilon": 1e-7}),
    ("rmsprop_centered_momentum", "RMSprop", {"learning_rate": 0.002, "momentum": 0.5, "centered": True}, "raw",
     "CenteredRMSProp", {"learning_rate": 0.002, "rho": 0.9, "momentum": 0.5, "epsilon": 1e-7}),
    ("adam", "Adam", {"learning_rate": 0.009}, "raw", "Adam",
     {"learning_rate": 0.009, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}),
    ("adam_keras_epsilon", "Adam", {"learning_rate": 0.001, "epsilon": 1e-7}, "raw", "Adam",
     {"learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
    ("keras_sgd_nesterov", "SGD", {"learning_rate": 0.0625, "momentum": 0.875, "nesterov": True}, "keras", "SGD", None),
    ("keras_rmsprop_centered", "RMSprop",
     {"learning_rate": 0.0078125, "rho": 0.875, "momentum": 0.5, "epsilon": 2.0**-20, "centered": True},
     "keras", "RMSprop", None),
    ("keras_adam", "Adam", dict(EXACT), "keras", "Adam", None),
    ("keras_adam_amsgrad", "Adam", {**EXACT, "amsgrad": True}, "keras", "Adam", None),
    ("keras_adamw", "AdamW", {**EXACT, "weight_decay": 0.25}, "keras", "AdamW", None),
    ("keras_adagrad", "Adagrad", {"learning_rate": 0.0625, "initial_accumulator_value": 0.125, "epsilon": 2.0**-20},
     "keras", "Adagrad", None),
    ("keras_adagrad_default_epsilon", "Adagrad", {"learning_rate": 0.0625, "initial_accumulator_value": 0.125},
     "keras", "Adagrad", None),
    ("nadam", "Nadam", {"learning_rate": 0.002, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}, "formula",
     "Nadam", None),
    ("keras_sgd_weight_decay", "SGD", {"learning_rate": 0.0625, "momentum": 0.5, "weight_decay": 0.25}, "keras",
     "SGD", None),
    ("keras_rmsprop_weight_decay", "RMSprop", {"learning_rate": 0.0078125, "rho": 0.875, "weight_decay": 0.5},
     "keras", "RMSprop", None),
    ("keras_adam_clipnorm", "Adam", {**EXACT, "clipnorm": 0.5}, "keras", "Adam", None),
    ("keras_sgd_clipvalue", "SGD", {"learning_rate": 0.0625, "clipvalue": 0.5}, "keras", "SGD", None),
    ("keras_sgd_global_clipnorm", "SGD", {"learning_rate": 0.0625, "momentum": 0.875, "global_clipnorm": 1.0},
     "keras", "SGD", None),
    ("keras_adagrad_clipnorm_decay", "Adagrad",
     {"learning_rate": 0.0625, "initial_accumulator_value": 0.125, "clipnorm": 1.0, "weight_decay": 0.125},
     "keras", "Adagrad", None),
    ("keras_adam_schedule", "Adam",
     {**EXACT, "learning_rate": {"class_name": "ExponentialDecay",
                                 "config": {"initial_learning_rate": 0.0078125, "decay_steps": 2, "decay_rate": 0.5}}},
     "keras", "Adam", None),
    ("keras_sgd_schedule_weight_decay", "SGD",
     {"learning_rate": {"class_name": "PiecewiseConstantDecay", "config": {"boundaries": [1, 3], "values": [
         0.125, 0.0625, 0.03125]}}, "momentum": 0.875, "weight_decay": 0.25}, "keras", "SGD", None),
]  # fmt: skip


def make_optimizers(path: Path) -> None:
    rng = np.random.default_rng(15)
    total = sum(int(np.prod(s)) for s in SHAPES)
    w0 = rng.standard_normal(total)
    grads = rng.standard_normal((STEPS, total))
    grads[3] *= 0.01  # one step of small gradients: clipping off, and the moments' history matters
    with h5py.File(path, "w") as f:
        f.attrs["shapes"] = json.dumps(SHAPES)
        f.create_dataset("w0", data=w0)
        f.create_dataset("grads", data=grads)
        for name, cls, args, ref, ref_name, ref_args in OPTIMIZER_CASES:
            if ref == "raw":
                weights = run_raw(ref_name, ref_args, w0, grads)
                reference = f"tf.raw_ops.ResourceApply{ref_name}"
            elif ref == "keras":
                weights = run_keras(ref_name, args, w0, grads)
                reference = f"keras.optimizers.{ref_name} on float64 variables (float32-exact hyperparameters)"
            else:
                weights = run_nadam_formula(args, w0, grads)
                keras_run = run_keras("Nadam", args, w0, grads)
                gap = float(np.max(np.abs(keras_run - weights) / np.maximum(np.abs(weights), 1e-300)))
                print(f"{name}: keras.optimizers.Nadam (0.96 cast through float32) differs by {gap:.2e} relative")
                reference = "Keras 3 Nadam formula in float64 TF ops"
            g = f.create_group(name)
            g.attrs["optimizer"] = json.dumps({"class_name": cls, "config": args})
            g.attrs["reference"] = reference
            g.create_dataset("weights", data=weights)


# ---- schedules -------------------------------------------------------------------------------------
SCHEDULE_CASES = [
    ("exponential", "ExponentialDecay", {"initial_learning_rate": 0.1, "decay_steps": 7, "decay_rate": 0.96}),
    ("exponential_staircase", "ExponentialDecay",
     {"initial_learning_rate": 0.1, "decay_steps": 7, "decay_rate": 0.5, "staircase": True}),
    ("piecewise", "PiecewiseConstantDecay", {"boundaries": [5, 12, 30], "values": [1.0, 0.5, 0.1, 0.01]}),
    ("inverse_time", "InverseTimeDecay", {"initial_learning_rate": 0.1, "decay_steps": 3, "decay_rate": 0.7}),
    ("inverse_time_staircase", "InverseTimeDecay",
     {"initial_learning_rate": 0.1, "decay_steps": 3, "decay_rate": 0.7, "staircase": True}),
    ("polynomial", "PolynomialDecay", {"initial_learning_rate": 0.1, "decay_steps": 25, "end_learning_rate": 0.0001}),
    ("polynomial_power_cycle", "PolynomialDecay",
     {"initial_learning_rate": 0.1, "decay_steps": 9, "end_learning_rate": 0.003, "power": 0.5, "cycle": True}),
    ("polynomial_power2", "PolynomialDecay",
     {"initial_learning_rate": 0.05, "decay_steps": 17, "end_learning_rate": 0.001, "power": 2.0}),
    ("cosine", "CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 30}),
    ("cosine_alpha", "CosineDecay", {"initial_learning_rate": 0.1, "decay_steps": 30, "alpha": 0.1}),
    ("cosine_warmup", "CosineDecay",
     {"initial_learning_rate": 0.0, "decay_steps": 25, "alpha": 0.05, "warmup_target": 0.1, "warmup_steps": 8}),
    ("cosine_warmup_from", "CosineDecay",
     {"initial_learning_rate": 0.01, "decay_steps": 20, "warmup_target": 0.2, "warmup_steps": 5}),
]  # fmt: skip
SCHEDULE_STEPS = [*range(41), 99, 100, 101, 1000, 123456]


def make_schedules(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("steps", data=np.asarray(SCHEDULE_STEPS, dtype=np.int64))
        for name, cls, config in SCHEDULE_CASES:
            schedule = keras_schedule({"class_name": cls, "config": config})
            if cls == "PiecewiseConstantDecay":
                schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
                    config["boundaries"], [np.float64(v) for v in config["values"]]
                )
            values = [float(schedule(tf.constant(s, tf.int64))) for s in SCHEDULE_STEPS]
            g = f.create_group(name)
            g.attrs["schedule"] = json.dumps({"class_name": cls, "config": config})
            g.create_dataset("values", data=np.asarray(values))


# ---- losses and metrics ----------------------------------------------------------------------------
def loss_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    n, k = 6, 4
    classes = rng.integers(0, k, n)
    classes[0] = 0
    onehot = np.eye(k)[classes]
    logits = rng.standard_normal((n, k)) * 3 + 2.0 * onehot  # better than chance, so accuracies are not 0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probs[0] = [1 - 3e-8, 1e-8, 1e-8, 1e-8]  # entries the 1e-7 clip bites on, both ends
    probs[1] = [0.5, 0.25, 0.2, 0.1]  # a row that does not sum to 1 (Keras normalises it for categorical)
    soft = rng.uniform(size=(n, k))
    soft /= soft.sum(axis=1, keepdims=True)
    sig = 1 / (1 + np.exp(-logits))
    sig[0, :2] = [1 - 1e-9, 1e-9]
    return {
        "logits": logits,
        "probs": probs,
        "classes": classes.astype(np.int64),
        "onehot": onehot,
        "soft": soft,
        "binary": rng.integers(0, 2, (n, k)).astype(np.float64),
        "sigmoid": sig,
        "targets": logits + rng.standard_normal((n, k)) * 1.5,
        "sample_weight": rng.uniform(0.0, 2.0, n),
    }


LOSS_CASES = [
    # name, xpnn loss class, config, outputs key, labels key
    ("cce_probs", "CategoricalCrossentropy", {}, "probs", "onehot"),
    ("cce_probs_soft_smooth", "CategoricalCrossentropy", {"label_smoothing": 0.1}, "probs", "soft"),
    ("cce_logits", "CategoricalCrossentropy", {"from_logits": True}, "logits", "onehot"),
    ("cce_logits_smooth", "CategoricalCrossentropy", {"from_logits": True, "label_smoothing": 0.2}, "logits", "soft"),
    ("scce_probs", "SparseCategoricalCrossentropy", {}, "probs", "classes"),
    ("scce_logits", "SparseCategoricalCrossentropy", {"from_logits": True}, "logits", "classes"),
    ("bce_probs", "BinaryCrossentropy", {}, "sigmoid", "binary"),
    ("bce_probs_smooth", "BinaryCrossentropy", {"label_smoothing": 0.1}, "sigmoid", "binary"),
    ("bce_logits", "BinaryCrossentropy", {"from_logits": True}, "logits", "binary"),
    ("bce_logits_smooth", "BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.3}, "logits", "soft"),
    ("mse", "MeanSquaredError", {}, "logits", "targets"),
    ("mae", "MeanAbsoluteError", {}, "logits", "targets"),
    ("huber", "Huber", {}, "logits", "targets"),
    ("huber_delta", "Huber", {"delta": 0.5}, "logits", "targets"),
]  # fmt: skip

METRIC_CASES = [
    # name, xpnn metric name, keras class, config, outputs key, labels key
    ("categorical_accuracy", "categorical_accuracy", "CategoricalAccuracy", {}, "logits", "onehot"),
    ("sparse_categorical_accuracy", "sparse_categorical_accuracy", "SparseCategoricalAccuracy", {}, "logits",
     "classes"),
    ("binary_accuracy", "binary_accuracy", "BinaryAccuracy", {}, "sigmoid", "binary"),
    ("top_2", "top_k_categorical_accuracy", "TopKCategoricalAccuracy", {"k": 2}, "logits_ties", "onehot"),
    ("mae", "mae", "MeanAbsoluteError", {}, "logits", "targets"),
    ("mse", "mse", "MeanSquaredError", {}, "logits", "targets"),
]  # fmt: skip


def make_losses(path: Path) -> None:
    data = loss_inputs(np.random.default_rng(7))
    data["logits_ties"] = np.round(data["logits"])  # ties at the top-k boundary
    with h5py.File(path, "w") as f:
        for key, value in data.items():
            f.create_dataset(f"inputs/{key}", data=value)
        for name, cls, config, out_key, label_key in LOSS_CASES:
            g = f.create_group(f"losses/{name}")
            g.attrs["loss"] = json.dumps({"class_name": cls, "config": config})
            g.attrs["outputs"], g.attrs["labels"] = out_key, label_key
            for dtype in ("float64", "float32"):  # float32: TF's own float32 run (1 - 1e-7 rounds in float32)
                loss = getattr(keras.losses, cls)(**config, dtype=dtype)
                labels = data[label_key] if label_key == "classes" else data[label_key].astype(dtype)
                for weighted in (False, True):
                    y_pred = tf.Variable(data[out_key].astype(dtype))
                    with tf.GradientTape() as tape:
                        sw = tf.constant(data["sample_weight"].astype(dtype)) if weighted else None
                        value = loss(tf.constant(labels), y_pred, sample_weight=sw)
                    grad = tape.gradient(value, y_pred)
                    suffix = f"{dtype}{'_weighted' if weighted else ''}"
                    g.create_dataset(f"value_{suffix}", data=np.asarray(value.numpy(), dtype=dtype))
                    g.create_dataset(f"grad_{suffix}", data=grad.numpy())
        for name, xpnn_name, cls, config, out_key, label_key in METRIC_CASES:
            dtype = "float32" if name == "top_2" else "float64"  # InTopKV2 takes float32 only (the ties are exact)
            metric = getattr(keras.metrics, cls)(**config, dtype=dtype)
            outputs = data[out_key].astype(dtype)
            metric.update_state(data[label_key], outputs, sample_weight=data["sample_weight"].astype(dtype))
            g = f.create_group(f"metrics/{name}")
            g.attrs["metric"], g.attrs["config"] = xpnn_name, json.dumps(config)
            g.attrs["outputs"], g.attrs["labels"] = out_key, label_key
            g.create_dataset("result", data=float(metric.result()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "tests" / "fixtures")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    make_optimizers(out / "keras_optimizers.h5")
    make_schedules(out / "keras_schedules.h5")
    make_losses(out / "keras_losses.h5")
    for name in ("keras_optimizers.h5", "keras_schedules.h5", "keras_losses.h5"):
        print(f"{out / name}: {(out / name).stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
