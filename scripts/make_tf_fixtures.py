"""Write TensorFlow's float64 truth for xpnn's tests into tests/fixtures/*.h5 (needs `pip install -e ".[tf]"`).

Each fixture runs a small network with tf.keras layers in float64 (GlorotUniform kernels from a fixed
TF seed, zero biases), the loss mean(tf.nn.softmax_cross_entropy_with_logits), gradients from
tf.GradientTape, and TensorFlow's ApplyGradientDescent / ApplyAdam kernels in float64. It stores the
inputs, the initial weights and, per step: the cost, logits, dW/db, updated weights and (step 1) every
layer's output and input gradient (dL/d input of each layer). The tests (tests/test_tf_fixtures.py)
rebuild each network in xpnn from the JSON layer list and compare, without importing TensorFlow.

    python scripts/make_tf_fixtures.py            # rewrites tests/fixtures/tf_*.h5
    python scripts/make_tf_fixtures.py --out DIR  # e.g. to check that a rerun gives the same numbers

Fixtures:
  tf_seed_one_image   the seed's check: np.random.seed(1); x = randn(1,64,64,3), y = randn(1,6) (random
                      normal labels, TF's gradient softmax - labels); reference net; one SGD step, lr 0.009.
  tf_adam_minibatch   64 SIGNS-shaped uint8 images (blocky random values, so the file stays small) scaled
                      to [0, 1], one-hot labels; reference net; 3 Adam steps (lr 0.009, eps 1e-8) on that batch.
  tf_<config>         small inputs: strides 2 and 3, VALID, odd sizes, average pooling, sigmoid and tanh;
                      2 Adam steps each (every layer recorded at step 1).
The seed fixture stores the recipe of its x (legacy np.random, a frozen stream) and x's SHA-256, not x.

The run is deterministic (byte-identical files on rerun): fixed TF seeds, oneDNN rewrites off, one thread.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF's own kernels; oneDNN may reorder sums between runs
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

try:
    import keras  # noqa: E402
    import tensorflow as tf  # noqa: E402
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit('make_tf_fixtures.py needs TensorFlow: pip install -e ".[tf]" (tensorflow-cpu==2.21.0).')

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
LARGE = 4096  # arrays with more elements than this are gzip-compressed (chunking costs more for small ones)
COMPRESS = {"compression": "gzip", "compression_opts": 9, "shuffle": True}

REFERENCE = [
    {"class": "Conv2D", "filters": 8, "kernel_size": 4, "strides": 1, "padding": "same"},
    {"class": "ReLU"},
    {"class": "MaxPool2D", "pool_size": 8, "strides": 8, "padding": "same"},
    {"class": "Conv2D", "filters": 16, "kernel_size": 2, "strides": 1, "padding": "same"},
    {"class": "ReLU"},
    {"class": "MaxPool2D", "pool_size": 4, "strides": 4, "padding": "same"},
    {"class": "Flatten"},
    {"class": "Dense", "units": 6},
]
SGD_SEED = {"class": "SGD", "learning_rate": 0.009}
ADAM = {"class": "Adam", "learning_rate": 0.009, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}

SMALL_CONFIGS = {  # name: (input shape with batch, classes, layers)
    "strides2_same_odd": (
        (2, 9, 11, 3),
        4,
        [
            {"class": "Conv2D", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"},
            {"class": "ReLU"},
            {"class": "MaxPool2D", "pool_size": 3, "strides": 2, "padding": "same"},
            {"class": "Conv2D", "filters": 5, "kernel_size": 2, "strides": 1, "padding": "valid"},
            {"class": "Sigmoid"},
            {"class": "Flatten"},
            {"class": "Dense", "units": 4},
        ],
    ),
    "strides3_valid_tanh": (
        (2, 13, 10, 2),
        5,
        [
            {"class": "Conv2D", "filters": 3, "kernel_size": [3, 2], "strides": 3, "padding": "valid"},
            {"class": "Tanh"},
            {"class": "MaxPool2D", "pool_size": 2, "strides": 1, "padding": "valid"},
            {"class": "Flatten"},
            {"class": "Dense", "units": 5},
        ],
    ),
    "avgpool_same_sigmoid": (
        (2, 7, 7, 3),
        3,
        [
            {"class": "Conv2D", "filters": 6, "kernel_size": 4, "strides": 1, "padding": "same"},
            {"class": "Sigmoid"},
            {"class": "AvgPool2D", "pool_size": 3, "strides": 2, "padding": "same"},
            {"class": "Conv2D", "filters": 4, "kernel_size": 3, "strides": 3, "padding": "same"},
            {"class": "Tanh"},
            {"class": "AvgPool2D", "pool_size": 2, "strides": 2, "padding": "valid"},
            {"class": "Flatten"},
            {"class": "Dense", "units": 3},
        ],
    ),
    "stride2_even_kernel_relu": (
        (2, 10, 9, 1),
        3,
        [
            {"class": "Conv2D", "filters": 2, "kernel_size": 4, "strides": 2, "padding": "same"},
            {"class": "ReLU"},
            {"class": "AvgPool2D", "pool_size": 3, "strides": 3, "padding": "same"},
            {"class": "Flatten"},
            {"class": "Dense", "units": 6},
            {"class": "Tanh"},
            {"class": "Dense", "units": 3},
        ],
    ),
}


def keras_layer(spec: dict, seed: int, dtype: str = "float64") -> keras.layers.Layer:
    """The tf.keras layer for one xpnn layer spec (same names and arguments as xpnn's get_config)."""
    args = {k: v for k, v in spec.items() if k != "class"}
    glorot = keras.initializers.GlorotUniform(seed=seed)
    kind = spec["class"]
    if kind == "Conv2D":
        return keras.layers.Conv2D(**args, kernel_initializer=glorot, dtype=dtype)
    if kind == "Dense":
        return keras.layers.Dense(**args, kernel_initializer=glorot, dtype=dtype)
    if kind == "MaxPool2D":
        return keras.layers.MaxPool2D(**args, dtype=dtype)
    if kind == "AvgPool2D":
        return keras.layers.AveragePooling2D(**args, dtype=dtype)
    if kind == "Flatten":
        return keras.layers.Flatten(dtype=dtype)
    activations = {"ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
    return keras.layers.Activation(activations[kind], dtype=dtype)


class TFOptimizer:
    """TensorFlow's own update kernels, ApplyGradientDescent and ApplyAdam, with every hyperparameter in float64.

    ApplyAdam is the epsilon-hat form (alpha = lr·√(1−β2ᵗ)/(1−β1ᵗ); w −= m·alpha/(√v+ε)) that
    keras.optimizers.Adam also writes out. Keras 3 is not used for the update because in float64 it still
    rounds lr, β1 and β2 through float32 (`ops.cast(self.beta_1, dtype)` converts the Python float to a
    float32 tensor first), which moves float64 weights by ~1e-6 relative: a Keras detail, not the algorithm.
    """

    def __init__(self, spec: dict, variables: list[tf.Variable]) -> None:
        self.spec, self.variables, self.t = spec, variables, 0
        self.slots = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]

    def apply(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        f64 = lambda value: tf.constant(value, tf.float64)  # noqa: E731
        lr = f64(self.spec["learning_rate"])
        for var, g, (m, v) in zip(self.variables, grads, self.slots):
            if self.spec["class"] == "SGD":
                tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=lr, delta=f64(g))
                continue
            b1, b2 = f64(self.spec["beta_1"]), f64(self.spec["beta_2"])
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=tf.pow(b1, f64(self.t)),
                beta2_power=tf.pow(b2, f64(self.t)),
                lr=lr,
                beta1=b1,
                beta2=b2,
                epsilon=f64(self.spec["epsilon"]),
                grad=f64(g),
            )


def cost_fn(logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits)), the seed's loss."""
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits))


def tf_step(layers: list, x: np.ndarray, y: np.ndarray) -> dict:
    """One forward/backward pass in float64: cost, logits, outputs, input grads and grads (Keras order)."""
    xt, yt = tf.constant(x, tf.float64), tf.constant(y, tf.float64)
    variables = [v for layer in layers for v in layer.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(xt)
        h, inputs, outputs = xt, [], []
        for layer in layers:
            inputs.append(h)
            h = layer(h)
            outputs.append(h)
        cost = cost_fn(h, yt)
    input_grads, grads = tape.gradient(cost, (inputs, variables))
    return {
        "cost": cost.numpy(),
        "logits": h.numpy(),
        "outputs": [o.numpy() for o in outputs],
        "input_grads": [g.numpy() for g in input_grads],
        "grads": [g.numpy() for g in grads],
        "variables": variables,
    }


def new_file(path: Path) -> h5py.File:
    """An HDF5 file with compact groups (small arrays cost bytes, not KiBs) and no timestamps anywhere."""
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    return h5py.File(h5py.h5f.create(str(path).encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))


def new_group(parent: h5py.Group, name: str) -> h5py.Group:
    """A group without modification times, so a rerun writes the same bytes."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def put(group: h5py.Group, name: str, a: np.ndarray) -> None:
    """A dataset without modification times, gzip-compressed when large."""
    group.create_dataset(name, data=a, track_times=False, **(COMPRESS if np.size(a) > LARGE else {}))


def write_list(group: h5py.Group, name: str, arrays: list[np.ndarray]) -> None:
    sub = new_group(group, name)
    for i, a in enumerate(arrays):
        put(sub, f"{i:02d}", a)


def run_fixture(
    path: Path,
    description: str,
    layers_spec: list,
    optimizer_spec: dict,
    x: np.ndarray,
    y: np.ndarray,
    steps: int,
    seed: int,
    record_layers: bool,
    x_recipe: str = "",
) -> None:
    """Build the network in tf.keras, run `steps` updates on (x, y), and write everything to `path` atomically.

    Every layer's output and input gradient are stored for step 1 when `record_layers`; x itself is
    replaced by `x_recipe` (and its SHA-256) when one is given.
    """
    store_x = not x_recipe
    keras.utils.set_random_seed(seed)
    layers = [keras_layer(spec, seed * 100 + i) for i, spec in enumerate(layers_spec)]
    x_float = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x
    h = tf.constant(x_float[:1], tf.float64)
    for layer in layers:  # build every layer
        h = layer(h)
    variables = [v for layer in layers for v in layer.trainable_variables]
    initial = [v.numpy() for v in variables]
    optimizer = TFOptimizer(optimizer_spec, variables)
    results = []
    for _ in range(steps):
        r = tf_step(layers, x_float, y)
        optimizer.apply(r["grads"])
        r["weights"] = [v.numpy() for v in variables]
        results.append(r)

    tmp = path.with_name(f".{path.name}.tmp")
    with new_file(tmp) as f:
        f.attrs["description"] = description
        f.attrs["layers"] = json.dumps(layers_spec)
        f.attrs["loss"] = "softmax_cross_entropy"
        f.attrs["optimizer"] = json.dumps(optimizer_spec)
        f.attrs["generator"] = (
            f"scripts/make_tf_fixtures.py with tensorflow {tf.__version__}, keras {keras.__version__}"
        )
        if store_x:
            put(f, "x", x)
        else:  # the seed's x is np.random.seed(1); randn(...): NumPy keeps that legacy stream fixed (NEP 19)
            f.attrs["x_recipe"] = x_recipe
        f.attrs["x_sha256"] = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
        put(f, "y", y)
        write_list(f, "initial_weights", initial)
        steps_group = new_group(f, "steps")
        for k, r in enumerate(results, start=1):
            g = new_group(steps_group, str(k))
            put(g, "cost", r["cost"])
            put(g, "logits", r["logits"])
            write_list(g, "grads", r["grads"])
            write_list(g, "weights", r["weights"])
            if record_layers and k == 1:
                write_list(g, "outputs", r["outputs"])
                write_list(g, "input_grads", r["input_grads"])
        f.flush()
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    print(f"{path.name}: {steps} step(s), cost {float(results[0]['cost']):.12g}, {path.stat().st_size / 1024:.1f} KiB")


def blocky_images(rng: np.random.Generator, n: int, block: int = 8) -> np.ndarray:
    """SIGNS-shaped uint8 images (n, 64, 64, 3) from random block x block tiles: realistic range, small file."""
    tiles = rng.integers(0, 256, size=(n, 64 // block, 64 // block, 3), dtype=np.uint8)
    return np.repeat(np.repeat(tiles, block, axis=1), block, axis=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES, help="folder for the .h5 files (default tests/fixtures)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # No tf.config.experimental.enable_op_determinism(): with it, softmax_cross_entropy_with_logits becomes
    # -Σ labels·log_softmax, whose gradient is softmax·Σlabels − labels instead of the fused kernel's
    # softmax − labels (the seed's TF). One thread and no oneDNN keep the CPU kernels' sums in a fixed order.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.backend.set_floatx("float64")

    np.random.seed(1)  # the seed's check, exactly as it drew its data
    x1 = np.random.randn(1, 64, 64, 3)
    y1 = np.random.randn(1, 6)
    run_fixture(
        args.out / "tf_seed_one_image.h5",
        "seed check: np.random.seed(1), x=randn(1,64,64,3), y=randn(1,6); TF Glorot weights; one SGD step lr 0.009",
        REFERENCE,
        SGD_SEED,
        x1,
        y1,
        steps=1,
        seed=1,
        record_layers=True,
        x_recipe="np.random.seed(1); x = np.random.randn(1, 64, 64, 3); y = np.random.randn(1, 6)",
    )

    rng = np.random.default_rng(2)
    x2 = blocky_images(rng, 64)
    y2 = np.eye(6)[rng.integers(0, 6, size=64)]
    run_fixture(
        args.out / "tf_adam_minibatch.h5",
        "64 SIGNS-shaped uint8 images /255, one-hot labels; reference net; 3 Adam steps lr 0.009 eps 1e-8",
        REFERENCE,
        ADAM,
        x2,
        y2,
        steps=3,
        seed=2,
        record_layers=False,
    )

    for i, (name, (shape, classes, spec)) in enumerate(SMALL_CONFIGS.items()):
        rng = np.random.default_rng(10 + i)
        x = rng.standard_normal(shape)
        y = np.eye(classes)[rng.integers(0, classes, size=shape[0])]
        run_fixture(
            args.out / f"tf_{name}.h5",
            f"{name}: input {shape}, {classes} classes; 2 Adam steps lr 0.01",
            spec,
            {**ADAM, "learning_rate": 0.01},
            x,
            y,
            steps=2,
            seed=10 + i,
            record_layers=True,
        )


if __name__ == "__main__":
    main()
