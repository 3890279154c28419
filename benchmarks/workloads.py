"""The benchmark's workloads: which network, which batch, and what one timed call does.

A network is a `Net`: an input shape, a class count and a tuple of layer specs, plain tuples that
every framework reads (`peers.py` builds the xpnn model from them, and PyTorch and TensorFlow copy
that model, weights included):

    ("conv", filters, kernel, strides, padding)   ("maxpool", size, strides, padding)   ("relu",)
    ("dense", units)                              ("avgpool", size, strides, padding)   ("flatten",)
    ("batchnorm",)                                ("dropout", rate)                     ("gap",)

Two suites: the reference network (and a wider variant) on 64x64x3 SIGNS-shaped images, where the
native fused Conv2D → ReLU → MaxPool2D unit was tuned, and the classic networks of issue 16 (LeNet-5,
VGG-style 3x3 conv pairs, a strided all-convolutional net, AlexNet-style overlapping pools, an MLP),
and a BatchNorm + Dropout CNN (three conv blocks with BatchNorm between conv and ReLU, global average
pooling, Dropout), each as a training step and as inference at two batch sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEARNING_RATE = 0.009
# the reference network's input and classes (benchmarks/profile_step.py reads them too)
IMAGE = (64, 64, 3)
CLASSES = 6

Spec = tuple  # one layer, see the module docstring


def conv(filters: int, kernel: int, strides: int = 1, padding: str = "same") -> Spec:
    return ("conv", filters, kernel, strides, padding)


def maxpool(size: int, strides: int | None = None, padding: str = "valid") -> Spec:
    return ("maxpool", size, size if strides is None else strides, padding)


def avgpool(size: int, strides: int | None = None, padding: str = "valid") -> Spec:
    return ("avgpool", size, size if strides is None else strides, padding)


RELU, FLATTEN, BATCHNORM, GAP = ("relu",), ("flatten",), ("batchnorm",), ("gap",)


def dropout(rate: float) -> Spec:
    return ("dropout", rate)


def dense(units: int) -> Spec:
    return ("dense", units)


@dataclass(frozen=True)
class Net:
    """A network every framework builds: `layers` are specs, `input_shape` is per sample (NHWC or features)."""

    name: str
    input_shape: tuple[int, ...]
    classes: int
    layers: tuple[Spec, ...]


def _reference_like(name: str, k1: int, f1: int, k2: int, f2: int) -> Net:
    """conv(k1, f1) → ReLU → max-pool 8/8 → conv(k2, f2) → ReLU → max-pool 4/4 → flatten → dense 6, all SAME."""
    layers = (conv(f1, k1), RELU, maxpool(8, 8, "same"), conv(f2, k2), RELU, maxpool(4, 4, "same"), FLATTEN)
    return Net(name, IMAGE, CLASSES, (*layers, dense(CLASSES)))


REFERENCE = _reference_like("reference", 4, 8, 2, 16)
WIDE = _reference_like("wide", 3, 32, 3, 64)

LENET = Net(
    "LeNet-5",
    (28, 28, 1),
    10,
    (conv(6, 5), RELU, maxpool(2), conv(16, 5, padding="valid"), RELU, maxpool(2), FLATTEN)
    + (dense(120), RELU, dense(84), RELU, dense(10)),
)
VGG = Net(
    "VGG-style 3x3 pairs",
    (32, 32, 3),
    10,
    (conv(32, 3), RELU, conv(32, 3), RELU, maxpool(2), conv(64, 3), RELU, conv(64, 3), RELU, maxpool(2), FLATTEN)
    + (dense(128), RELU, dense(10)),
)
ALL_CONV = Net(
    "strided all-conv",
    (32, 32, 3),
    10,
    (conv(32, 3), RELU, conv(32, 3, 2), RELU, conv(64, 3), RELU, conv(64, 3, 2), RELU)
    + (conv(10, 1, padding="valid"), avgpool(8), FLATTEN),
)
ALEXNET_POOLS = Net(
    "AlexNet-style 3/2 pools",
    (32, 32, 3),
    10,
    (conv(32, 5), RELU, maxpool(3, 2, "same"), conv(64, 5), RELU, avgpool(3, 2, "valid"), FLATTEN, dense(10)),
)
MLP = Net("MLP 784-512-512-10", (784,), 10, (dense(512), RELU, dense(512), RELU, dense(10)))

BN_DROPOUT = Net(
    "BatchNorm + Dropout CNN",
    (32, 32, 3),
    10,
    (conv(32, 3), BATCHNORM, RELU, maxpool(2), conv(64, 3), BATCHNORM, RELU, maxpool(2))
    + (conv(128, 3), BATCHNORM, RELU, GAP, dropout(0.3), dense(10)),
)

CLASSIC = (LENET, VGG, ALL_CONV, ALEXNET_POOLS, MLP, BN_DROPOUT)
TRAIN_BATCHES = (64, 256)
PREDICT_BATCHES = (128, 512)
PENDING: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workload:
    """`kind` is "train" (one forward/backward/Adam step), "predict" (inference) or "signs" (a full run)."""

    key: str
    label: str
    net: Net
    batch: int
    kind: str


def _classic() -> list[Workload]:
    keys = {LENET: "lenet", VGG: "vgg", ALL_CONV: "allconv", ALEXNET_POOLS: "alexpool", MLP: "mlp",
            BN_DROPOUT: "bndrop"}  # fmt: skip
    out = []
    for net in CLASSIC:
        for kind, batches in (("train", TRAIN_BATCHES), ("predict", PREDICT_BATCHES)):
            for batch in batches:
                label = f"{net.name} {kind}, batch {batch}"
                out.append(Workload(f"{keys[net]}-{kind}{batch}", label, net, batch, kind))
    return out


WORKLOADS = [
    Workload("a", "(a) reference train step, batch 64", REFERENCE, 64, "train"),
    Workload("b256", "(b) reference train step, batch 256", REFERENCE, 256, "train"),
    Workload("b1024", "(b) reference train step, batch 1024", REFERENCE, 1024, "train"),
    Workload("c", "(c) wide train step (32/64 filters, 3x3), batch 64", WIDE, 64, "train"),
    Workload("d", "(d) reference predict, batch 1024", REFERENCE, 1024, "predict"),
    Workload("e", "(e) reference 25-epoch SIGNS run, batch 64", REFERENCE, 64, "signs"),
    *_classic(),
]
SUITES = {
    "reference": [w.key for w in WORKLOADS if w.net in (REFERENCE, WIDE) and w.kind != "signs"],
    "classic": [w.key for w in WORKLOADS if w.net in CLASSIC],
}


def _out_size(size: int, k: int, stride: int, padding: str) -> int:
    return -(-size // stride) if padding == "same" else (size - k) // stride + 1


def flops(wl: Workload) -> float:
    """Floating-point operations of one call: 2 per multiply-add of the convs and dense layers.

    Inference counts the forward; a training step adds the weight gradient (the same count) and the
    input gradient (again the same) of every layer but the first, whose input gradient nobody needs.
    Pools, activations, the loss and Adam are left out (a few percent at most on these networks).
    """
    shape, macs = wl.net.input_shape, []
    for spec in wl.net.layers:
        if spec[0] == "conv":
            _, filters, k, s, padding = spec
            h, w, cin = shape
            shape = (_out_size(h, k, s, padding), _out_size(w, k, s, padding), filters)
            macs.append(shape[0] * shape[1] * filters * k * k * cin)
        elif spec[0] in ("maxpool", "avgpool"):
            _, k, s, padding = spec
            shape = (_out_size(shape[0], k, s, padding), _out_size(shape[1], k, s, padding), shape[2])
        elif spec[0] == "flatten":
            shape = (int(np.prod(shape)),)
        elif spec[0] == "gap":
            shape = (shape[-1],)
        elif spec[0] == "dense":
            macs.append(shape[0] * spec[1])
            shape = (spec[1],)
    per_sample = sum(macs) if wl.kind == "predict" else 3 * sum(macs) - macs[0]
    return 2.0 * per_sample * wl.batch


def tf_same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow's SAME (before, after) padding of one axis; the odd pixel goes after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def synthetic_batch(
    batch: int, shape: tuple[int, ...] = IMAGE, classes: int = CLASSES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """float32 inputs in [0, 1) of the given per-sample shape and integer labels 0..classes-1."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, classes, size=batch)
    return x, y


def signs_train() -> tuple[np.ndarray, np.ndarray] | None:
    """SIGNS' 1080 training images as float32 in [0, 1] and int labels, or None when it is absent."""
    from xpnn.datasets import find_signs, load_signs

    if find_signs() is None:
        return None
    (x, y), _ = load_signs()
    return (x / np.float32(255.0)).astype(np.float32), y
