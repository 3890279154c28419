"""One runner per framework (xpnn, PyTorch, TensorFlow) for each workload: a callable that does one timed unit.

"xpnn-twin" is xpnn with its native kernels off (XPNN_NATIVE=0): the NumPy path a machine without a C
compiler runs.

A runner's call does one training step, one inference pass, or one whole SIGNS run, and
returns a host float so that every framework finishes its work before the clock is read.
PyTorch gets TF's SAME pads explicitly with F.pad (NCHW inside, data converted once, untimed);
TensorFlow gets Keras layers in a `tf.function` train step. Missing peers raise ImportError.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from workloads import CLASSES, IMAGE, LEARNING_RATE, Net, Workload, tf_same_pads

EPOCHS = 25
SIGNS_BATCH = 64

Runner = Callable[..., float]  # a "signs" runner takes `epochs` (25 by default)


def set_threads(framework: str, threads: int) -> None:
    """Give `framework` `threads` threads (call before it does any work)."""
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    elif framework == "tf":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


# ---- xpnn ------------------------------------------------------------------------------------------------
def xpnn_runner(wl: Workload, x: np.ndarray, y: np.ndarray) -> Runner:
    from xpnn import Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential, get_backend, get_loss
    from xpnn.inputs import prepare_x, prepare_y

    net = wl.net
    layers = [
        Conv2D(net.f1, net.k1, padding="same"),
        ReLU(),
        MaxPool2D(8, strides=8, padding="same"),
        Conv2D(net.f2, net.k2, padding="same"),
        ReLU(),
        MaxPool2D(4, strides=4, padding="same"),
        Flatten(),
        Dense(CLASSES),
    ]
    model = Sequential(layers, dtype="float32").build(IMAGE, seed=1)
    opt = Adam(LEARNING_RATE, epsilon=1e-8)
    backend = get_backend()
    if wl.kind == "predict":
        return lambda: float(model.predict(x, batch_size=wl.batch)[0, 0])
    if wl.kind == "signs":

        def run(epochs: int = EPOCHS) -> float:
            history = model.fit(x, y, epochs=epochs, batch_size=SIGNS_BATCH, optimizer=opt, verbose=0)
            return history.history["loss"][-1]

        return run
    loss = get_loss("softmax_cross_entropy")
    xb = prepare_x(x, IMAGE, model.dtype, backend)
    yb = prepare_y(y, len(xb), CLASSES, model.dtype, backend)

    def step() -> float:
        p = model.run_pass(xb, yb, loss)
        opt.apply(model.parameters(), p.grads)
        return float(p.cost)

    return step


def xpnn_twin_runner(wl: Workload, x: np.ndarray, y: np.ndarray) -> Runner:
    """xpnn_runner with XPNN_NATIVE=0 around every call (the fused unit reads it per call)."""
    run = xpnn_runner(wl, x, y)

    def twin(*args, **kwargs) -> float:
        before = os.environ.get("XPNN_NATIVE")
        os.environ["XPNN_NATIVE"] = "0"
        try:
            return run(*args, **kwargs)
        finally:
            if before is None:
                del os.environ["XPNN_NATIVE"]
            else:
                os.environ["XPNN_NATIVE"] = before

    return twin


# ---- PyTorch -----------------------------------------------------------------------------------------------
def torch_runner(wl: Workload, x: np.ndarray, y: np.ndarray) -> Runner:
    import torch
    import torch.nn.functional as F
    from torch import nn

    net = wl.net

    class TorchNet(nn.Module):
        """The same network in NCHW, with TensorFlow's SAME pads applied by F.pad."""

        def __init__(self, spec: Net) -> None:
            super().__init__()
            self.spec = spec
            self.conv1 = nn.Conv2d(IMAGE[2], spec.f1, spec.k1)
            self.conv2 = nn.Conv2d(spec.f1, spec.f2, spec.k2)
            self.fc = nn.Linear(spec.f2 * 2 * 2, CLASSES)

        @staticmethod
        def same(t: torch.Tensor, k: int, stride: int, value: float = 0.0) -> torch.Tensor:
            (top, bottom), (left, right) = tf_same_pads(t.shape[2], k, stride), tf_same_pads(t.shape[3], k, stride)
            if top == bottom == left == right == 0:
                return t
            return F.pad(t, (left, right, top, bottom), value=value)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            t = F.relu(self.conv1(self.same(t, self.spec.k1, 1)))
            t = F.max_pool2d(self.same(t, 8, 8, -float("inf")), 8, 8)
            t = F.relu(self.conv2(self.same(t, self.spec.k2, 1)))
            t = F.max_pool2d(self.same(t, 4, 4, -float("inf")), 4, 4)
            return self.fc(t.flatten(1))

    torch.manual_seed(1)
    model = TorchNet(net)
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=1e-8)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))

    def step(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xs), ys)
        loss.backward()
        opt.step()
        return loss

    if wl.kind == "predict":

        def predict() -> float:
            with torch.inference_mode():
                return float(model(xt).numpy()[0, 0])

        return predict
    if wl.kind == "signs":
        rng = np.random.default_rng(0)

        def run(epochs: int = EPOCHS) -> float:
            for _ in range(epochs):
                order = torch.from_numpy(rng.permutation(len(xt)))
                for i in range(0, len(xt), SIGNS_BATCH):
                    idx = order[i : i + SIGNS_BATCH]
                    loss = step(xt[idx], yt[idx])
            return float(loss)

        return run
    return lambda: float(step(xt, yt))


# ---- TensorFlow ----------------------------------------------------------------------------------------------
def tf_runner(wl: Workload, x: np.ndarray, y: np.ndarray) -> Runner:
    import tensorflow as tf

    keras = tf.keras
    net = wl.net
    tf.random.set_seed(1)
    model = keras.Sequential(
        [
            keras.Input(IMAGE),
            keras.layers.Conv2D(net.f1, net.k1, padding="same", activation="relu"),
            keras.layers.MaxPool2D(8, 8, padding="same"),
            keras.layers.Conv2D(net.f2, net.k2, padding="same", activation="relu"),
            keras.layers.MaxPool2D(4, 4, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES),
        ]
    )
    opt = keras.optimizers.Adam(LEARNING_RATE, epsilon=1e-8)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    xt, yt = tf.constant(x), tf.constant(np.asarray(y, dtype=np.int64))

    @tf.function
    def step(xs: tf.Tensor, ys: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = loss_fn(ys, model(xs, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    if wl.kind == "predict":
        forward = tf.function(lambda xs: model(xs, training=False))
        return lambda: float(forward(xt).numpy()[0, 0])
    if wl.kind == "signs":
        rng = np.random.default_rng(0)

        def run(epochs: int = EPOCHS) -> float:
            for _ in range(epochs):
                order = rng.permutation(len(x))
                for i in range(0, len(x), SIGNS_BATCH):
                    idx = tf.constant(order[i : i + SIGNS_BATCH])
                    loss = step(tf.gather(xt, idx), tf.gather(yt, idx))
            return float(loss.numpy())

        return run
    return lambda: float(step(xt, yt).numpy())


RUNNERS = {"xpnn": xpnn_runner, "xpnn-twin": xpnn_twin_runner, "torch": torch_runner, "tf": tf_runner}
