"""xpnn: exact, fast, readable conv and dense networks on NumPy or CuPy, with TensorFlow semantics."""

import os

# Idle OpenBLAS workers spin for ~2^28 cycles after each GEMM by default and take the cores that xpnn's own
# worker threads need (README "Speed": a SIGNS epoch 0.24 s with the default, 0.17 s with this). OpenBLAS
# reads it when NumPy first loads, so it takes effect only when xpnn is imported before NumPy.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from xpnn import callbacks, datasets, distributed, layers, losses, metrics, optimizers, regularizers, schedules
from xpnn.api import Sequential, load_model
from xpnn.backends import get_backend, set_backend
from xpnn.errors import DivergedError
from xpnn.layers import (
    ELU,
    GELU,
    Activation,
    AvgPool2D,
    BatchNormalization,
    Conv2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    GlobalMaxPooling2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Reshape,
    SeparableConv2D,
    Sigmoid,
    Softmax,
    Tanh,
    ZeroPadding2D,
    register_keras_serializable,
)
from xpnn.losses import get_loss
from xpnn.optimizers import SGD, Adagrad, Adam, AdamW, Nadam, RMSprop, get_optimizer
from xpnn.trace import trace  # the function; the module stays importable as `from xpnn.trace import ...`
from xpnn.training import History
from xpnn.version import __version__

__all__ = [
    "__version__",
    "ELU",
    "GELU",
    "Activation",
    "BatchNormalization",
    "DepthwiseConv2D",
    "Dropout",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "LeakyReLU",
    "Reshape",
    "SeparableConv2D",
    "ZeroPadding2D",
    "register_keras_serializable",
    "regularizers",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Nadam",
    "RMSprop",
    "callbacks",
    "metrics",
    "schedules",
    "AvgPool2D",
    "Conv2D",
    "Dense",
    "DivergedError",
    "Flatten",
    "History",
    "MaxPool2D",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "datasets",
    "distributed",
    "get_backend",
    "get_loss",
    "get_optimizer",
    "layers",
    "load_model",
    "losses",
    "optimizers",
    "set_backend",
    "trace",
]
