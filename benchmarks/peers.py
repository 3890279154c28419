"""One runner per framework (xpnn, PyTorch, TensorFlow) for each workload: a callable that does one timed unit.

"xpnn-twin" is xpnn with its native kernels off (XPNN_NATIVE=0): the NumPy path a machine without a C
compiler runs.

Every framework runs the same network with the same initial weights: xpnn builds it from the workload's
specs (`xpnn_model`), PyTorch copies that model (`torch_twin.torch_twin`: NCHW inside, data converted
once, untimed; TF's SAME pads) and TensorFlow too (`keras_twin`: Keras layers, a `tf.function` train step).
A runner's call does one training step, one inference pass, or one whole SIGNS run, and returns a host
float so that every framework finishes its work before the clock is read. Missing peers raise ImportError.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from workloads import LEARNING_RATE, Net, Workload

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
def xpnn_model(net: Net, seed: int = 1):
    """The xpnn Sequential of `net` (float32); PyTorch and TensorFlow copy it, weights included."""
    import xpnn

    build = {
        "conv": lambda f, k, s, p: xpnn.Conv2D(f, k, strides=s, padding=p),
        "maxpool": lambda k, s, p: xpnn.MaxPool2D(k, strides=s, padding=p),
        "avgpool": lambda k, s, p: xpnn.AvgPool2D(k, strides=s, padding=p),
        "relu": xpnn.ReLU,
        "flatten": xpnn.Flatten,
        "dense": xpnn.Dense,
        "batchnorm": xpnn.BatchNormalization,
        "dropout": xpnn.Dropout,
        "gap": xpnn.GlobalAveragePooling2D,
    }
    layers = [build[spec[0]](*spec[1:]) for spec in net.layers]
    return xpnn.Sequential(layers, dtype="float32").build(net.input_shape, seed=seed)


def xpnn_runner(wl: Workload, x: np.ndarray, y: np.ndarray) -> Runner:
    from xpnn import Adam, get_backend, get_loss
    from xpnn.inputs import prepare_x, prepare_y

    net = wl.net
    model = xpnn_model(net)
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
    xb = prepare_x(x, net.input_shape, model.dtype, backend)
    yb = prepare_y(y, len(xb), net.classes, model.dtype, backend)

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
    from torch_twin import torch_twin

    model = torch_twin(xpnn_model(wl.net))  # the same network and initial weights as xpnn's
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=1e-8)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if x.ndim == 4 else x))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))

    def step(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xs), ys)
        loss.backward()
        opt.step()
        return loss

    if wl.kind == "predict":
        model.eval()  # BatchNorm's moving statistics, no Dropout (xpnn's and Keras's inference mode)

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
def keras_twin(model):
    """A Keras copy of an xpnn Sequential with its weights; a ReLU right after a conv or dense layer becomes
    that layer's activation (as a Keras user writes it; TF's graph optimizer fuses conv + bias + ReLU)."""
    import tensorflow as tf

    import xpnn

    keras = tf.keras
    layers: list = [keras.Input(model.layers[0].input_shape)]
    for i, layer in enumerate(model.layers):
        follows = i > 0 and isinstance(model.layers[i - 1], (xpnn.Conv2D, xpnn.Dense))
        relu_next = i + 1 < len(model.layers) and isinstance(model.layers[i + 1], xpnn.ReLU)
        act = "relu" if relu_next else None
        if isinstance(layer, xpnn.Conv2D):
            layers.append(
                keras.layers.Conv2D(
                    layer.filters,
                    layer.kernel_size,
                    layer.strides,
                    layer.padding,
                    activation=act,
                    use_bias=layer.use_bias,
                )
            )
        elif isinstance(layer, xpnn.Dense):
            layers.append(keras.layers.Dense(layer.units, activation=act, use_bias=layer.use_bias))
        elif isinstance(layer, xpnn.ReLU):
            if not follows:
                layers.append(keras.layers.ReLU())
        elif isinstance(layer, xpnn.MaxPool2D):
            layers.append(keras.layers.MaxPool2D(layer.pool_size, layer.strides, layer.padding))
        elif isinstance(layer, xpnn.AvgPool2D):
            layers.append(keras.layers.AveragePooling2D(layer.pool_size, layer.strides, layer.padding))
        elif isinstance(layer, xpnn.Flatten):
            layers.append(keras.layers.Flatten())
        elif isinstance(layer, xpnn.BatchNormalization):
            layers.append(keras.layers.BatchNormalization(momentum=layer.momentum, epsilon=layer.epsilon))
        elif isinstance(layer, xpnn.Dropout):
            layers.append(keras.layers.Dropout(layer.rate))
        elif isinstance(layer, xpnn.GlobalAveragePooling2D):
            layers.append(keras.layers.GlobalAveragePooling2D())
        else:
            raise NotImplementedError(f"no Keras twin for {layer!r}")
    twin = keras.Sequential(layers)
    twin.set_weights(model.get_weights())
    return twin


def tf_runner(wl: Workload, x: np.ndarray, y: np.ndarray) -> Runner:
    import tensorflow as tf

    keras = tf.keras
    model = keras_twin(xpnn_model(wl.net))
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
