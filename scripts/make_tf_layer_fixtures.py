"""Write TensorFlow's float64 truth for issue 14's layers into tests/fixtures/layers_tf.h5 (needs TensorFlow).

One HDF5 group per case: a tf.keras layer in float64 with seeded random weights, run on a small random
input; the cost sum(out · dout) with a random upstream gradient `dout`; tf.GradientTape for dx and the
trainable weights' gradients. Stored per case: the xpnn class name and config (attrs), x, dout, the
weights in Keras order, the output, dx, the gradients, and the training flag. BatchNormalization cases
run several training steps (each with its own x and dout; the moving statistics after each), then one
inference pass. Dropout's mask is TF's own (read off Keras's output, which is zero exactly where dropped)
and is stored, since TF's random stream is TF's. Regularizers store the penalty and its gradient.

    python scripts/make_tf_layer_fixtures.py            # rewrites tests/fixtures/layers_tf.h5
    python scripts/make_tf_layer_fixtures.py --out DIR  # somewhere else, e.g. to compare a rerun

tests/test_layer_fixtures.py reads the file without importing TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # TF's own kernels, the same sums on every rerun
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

try:
    import keras  # noqa: E402
    import tensorflow as tf  # noqa: E402
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit('make_tf_layer_fixtures.py needs TensorFlow: pip install -e ".[tf]" (tensorflow-cpu==2.21.0).')

ROOT = Path(__file__).resolve().parents[1]
FILE = "layers_tf.h5"
F64 = "float64"


def dataset(group: h5py.Group, name: str, data) -> None:
    group.create_dataset(name, data=np.asarray(data))


def gelu_tanh(x):
    return keras.activations.gelu(x, approximate=True)


# (case name, xpnn class, xpnn config, keras layer factory, input shape, extra)
def cases() -> list[tuple[str, str, dict, object, tuple[int, ...], dict]]:
    K = keras.layers
    out = []

    def conv(name, shape, filters, k, **kw):
        xcfg = {"filters": filters, "kernel_size": k, **kw}
        out.append((name, "Conv2D", xcfg, lambda: K.Conv2D(filters, k, dtype=F64, **kw), shape, {}))

    conv("conv_d2_g1_same", (2, 7, 6, 2), 3, 3, padding="same", dilation_rate=2)
    conv("conv_d3_g2_same", (2, 8, 7, 4), 4, 3, padding="same", dilation_rate=3, groups=2)
    conv("conv_d2x1_g4_valid", (2, 7, 8, 4), 4, 2, padding="valid", dilation_rate=(2, 1), groups=4)
    conv("conv_d1_g3_s2_same", (2, 7, 6, 3), 6, 3, padding="same", strides=2, groups=3)
    conv("conv_d3_g1_valid_relu", (1, 9, 8, 2), 3, 2, padding="valid", dilation_rate=3, activation="relu")
    conv("conv_s2_gelu", (2, 6, 5, 2), 3, 3, padding="same", strides=2, activation="gelu")

    def depthwise(name, shape, k, **kw):
        xcfg = {"kernel_size": k, **kw}
        out.append((name, "DepthwiseConv2D", xcfg, lambda: K.DepthwiseConv2D(k, dtype=F64, **kw), shape, {}))

    depthwise("depthwise_m1_same", (2, 6, 7, 3), 3, padding="same")
    depthwise("depthwise_m2_d2_same", (2, 7, 6, 2), 3, padding="same", depth_multiplier=2, dilation_rate=2)
    depthwise("depthwise_m2_s2_valid_elu", (2, 7, 7, 2), 2, strides=2, depth_multiplier=2, activation="elu")
    depthwise("depthwise_m1_d3_valid", (1, 8, 9, 2), 2, dilation_rate=3)

    def separable(name, shape, filters, k, **kw):
        xcfg = {"filters": filters, "kernel_size": k, **kw}
        factory = lambda: K.SeparableConv2D(filters, k, dtype=F64, **kw)  # noqa: E731
        out.append((name, "SeparableConv2D", xcfg, factory, shape, {}))

    separable("separable_m1_same", (2, 6, 6, 3), 4, 3, padding="same")
    separable("separable_m2_d2_silu", (2, 7, 6, 2), 3, 3, padding="same", depth_multiplier=2, dilation_rate=2,
              activation="silu")  # fmt: skip

    for act in ("relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu", "gelu", "silu", "softplus", "linear"):
        out.append((f"dense_{act}", "Dense", {"units": 4, "activation": act},
                    lambda act=act: K.Dense(4, activation=act, dtype=F64), (5, 3), {"scale_x": 3.0}))  # fmt: skip

    act_layers = [
        ("leaky_relu_default", "LeakyReLU", {}, lambda: K.LeakyReLU(dtype=F64)),
        ("leaky_relu_0.1", "LeakyReLU", {"negative_slope": 0.1}, lambda: K.LeakyReLU(negative_slope=0.1, dtype=F64)),
        ("elu_default", "ELU", {}, lambda: K.ELU(dtype=F64)),
        ("elu_0.7", "ELU", {"alpha": 0.7}, lambda: K.ELU(alpha=0.7, dtype=F64)),
        ("gelu_exact", "GELU", {}, lambda: K.Activation("gelu", dtype=F64)),
        ("gelu_tanh", "GELU", {"approximate": True}, lambda: K.Activation(gelu_tanh, dtype=F64)),
        ("activation_softplus", "Activation", {"activation": "softplus"}, lambda: K.Activation("softplus", dtype=F64)),
        ("activation_swish", "Activation", {"activation": "swish"}, lambda: K.Activation("swish", dtype=F64)),
    ]
    for name, cls, cfg, factory in act_layers:
        out.append((name, cls, cfg, factory, (2, 3, 4, 5), {"scale_x": 3.0}))

    for name, cfg, shape in [
        ("bn_dense", {"momentum": 0.9}, (8, 5)),
        ("bn_conv", {"momentum": 0.8}, (3, 4, 5, 3)),
        ("bn_conv_default", {}, (2, 3, 3, 4)),
        ("bn_conv_no_center_scale", {"center": False, "scale": False, "epsilon": 0.01}, (2, 4, 3, 3)),
        ("bn_axis1", {"axis": 1, "momentum": 0.5}, (2, 3, 4, 5)),
    ]:
        out.append((name, "BatchNormalization", cfg,
                    lambda cfg=cfg: K.BatchNormalization(dtype=F64, **cfg), shape, {"bn_steps": 3}))  # fmt: skip

    for rate in (0.25, 0.6):
        factory = lambda rate=rate: K.Dropout(rate, seed=7, dtype=F64)  # noqa: E731
        out.append((f"dropout_{rate}", "Dropout", {"rate": rate}, factory, (3, 4, 4, 3), {"training": True}))

    out.append(("gap", "GlobalAveragePooling2D", {}, lambda: K.GlobalAveragePooling2D(dtype=F64), (2, 5, 4, 3), {}))
    out.append(("gmp", "GlobalMaxPooling2D", {}, lambda: K.GlobalMaxPooling2D(dtype=F64), (2, 4, 5, 3), {}))
    out.append(("gmp_ties_nan", "GlobalMaxPooling2D", {}, lambda: K.GlobalMaxPooling2D(dtype=F64), (2, 3, 3, 3),
                {"ties_nan": True}))  # fmt: skip
    out.append(("gap_keepdims", "GlobalAveragePooling2D", {"keepdims": True},
                lambda: K.GlobalAveragePooling2D(keepdims=True, dtype=F64), (2, 3, 4, 2), {}))  # fmt: skip
    out.append(("zero_padding", "ZeroPadding2D", {"padding": [[1, 2], [0, 3]]},
                lambda: K.ZeroPadding2D(((1, 2), (0, 3)), dtype=F64), (2, 3, 2, 2), {}))  # fmt: skip
    out.append(("reshape", "Reshape", {"target_shape": [-1, 6]}, lambda: K.Reshape((-1, 6), dtype=F64),
                (2, 3, 4, 3), {}))  # fmt: skip
    out.append(("maxpool_nan_dout", "MaxPool2D", {"pool_size": 2, "strides": 2, "padding": "valid"},
                lambda: K.MaxPool2D(2, dtype=F64), (1, 4, 4, 2), {"nan_dout": True}))  # fmt: skip
    return out


def run_case(layer, x: np.ndarray, dout: np.ndarray, training: bool):
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = layer(xt, training=training)
        cost = tf.reduce_sum(out * tf.constant(dout))
    grads = tape.gradient(cost, [xt, *layer.trainable_weights])
    return out.numpy(), grads[0].numpy(), [g.numpy() for g in grads[1:]]


def write_case(f: h5py.File, name, cls, cfg, factory, shape, extra, rng: np.random.Generator) -> None:
    g = f.create_group(name)
    g.attrs["class_name"] = cls
    g.attrs["config"] = json.dumps(cfg)
    layer = factory()
    layer.build(shape)
    weights = []
    for w in layer.weights:  # Keras order: trainable first, then the moving statistics
        if "moving_variance" in w.path:
            value = rng.uniform(0.5, 1.5, w.shape)
        else:
            value = rng.standard_normal(w.shape) * (0.5 if "kernel" in w.path else 1.0)
        w.assign(value)
        weights.append(value)
    for i, w in enumerate(weights):
        dataset(g, f"weights/{i}", w)
    steps = extra.get("bn_steps", 0)
    for step in range(max(steps, 1)):
        x = rng.standard_normal(shape) * extra.get("scale_x", 1.0) + (0.5 if steps else 0.0)
        if extra.get("ties_nan"):
            x[0, 0, 0, 0] = x[0, 2, 1, 0] = x[0, :, :, 0].max() + 1.0  # a tie for channel 0 of image 0
            x[1, 1, 1, 2] = np.nan  # a NaN max for channel 2 of image 1
        dout_shape = layer.compute_output_shape(shape)
        dout = rng.standard_normal(dout_shape)
        if extra.get("nan_dout"):
            dout[0, 0, 1, 1] = np.nan
        training = bool(steps) or extra.get("training", False)
        out, dx, grads = run_case(layer, x, dout, training)
        s = g.create_group(f"steps/{step}")
        s.attrs["training"] = training
        for key, value in (("x", x), ("dout", dout), ("out", out), ("dx", dx)):
            dataset(s, key, value)
        for i, grad in enumerate(grads):
            dataset(s, f"grads/{i}", grad)
        if steps:
            for i, w in enumerate(layer.non_trainable_weights):
                dataset(s, f"moving/{i}", w.numpy())
        if cls == "Dropout":
            dataset(s, "keep", out != 0)
    if steps:  # one inference pass with the moving statistics
        x = rng.standard_normal(shape) + 0.5
        dout = rng.standard_normal(shape)
        out, dx, grads = run_case(layer, x, dout, False)
        s = g.create_group(f"steps/{steps}")
        s.attrs["training"] = False
        for key, value in (("x", x), ("dout", dout), ("out", out), ("dx", dx)):
            dataset(s, key, value)
        for i, grad in enumerate(grads):
            dataset(s, f"grads/{i}", grad)


def write_regularizers(f: h5py.File, rng: np.random.Generator) -> None:
    g = f.create_group("regularizers")
    w = rng.standard_normal((4, 3))
    dataset(g, "w", w)
    for name, reg in {
        "L1": keras.regularizers.L1(0.3),
        "L2": keras.regularizers.L2(0.2),
        "L1L2": keras.regularizers.L1L2(l1=0.1, l2=0.4),
    }.items():
        wt = tf.constant(w)
        with tf.GradientTape() as tape:
            tape.watch(wt)
            value = reg(wt)
        r = g.create_group(name)
        r.attrs["config"] = json.dumps(reg.get_config())
        dataset(r, "value", value.numpy())
        dataset(r, "grad", tape.gradient(value, wt).numpy())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    args = parser.parse_args(argv)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    keras.utils.set_random_seed(14)
    rng = np.random.default_rng(14)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / FILE
    with h5py.File(path, "w", libver="latest") as f:  # compact headers: many small datasets
        f.attrs["tensorflow"] = tf.__version__
        f.attrs["keras"] = keras.__version__
        for case in cases():
            write_case(f, *case, rng)
        write_regularizers(f, rng)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
