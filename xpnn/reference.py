"""The reference network of SparkNeuralNets (xpnn's predecessor) and its training settings, in one place."""

from __future__ import annotations

from xpnn.api import Sequential
from xpnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from xpnn.optimizers import Adam

LEARNING_RATE = 0.009
BATCH_SIZE = 64
EPOCHS = 25
INPUT_SHAPE = (64, 64, 3)


def reference_layers(classes: int = 6) -> list:
    """conv 4x4x8 SAME → ReLU → max-pool 8/8 SAME → conv 2x2x16 SAME → ReLU → max-pool 4/4 SAME → flatten → dense."""
    return [
        Conv2D(8, 4, strides=1, padding="same"),
        ReLU(),
        MaxPool2D(8, strides=8, padding="same"),
        Conv2D(16, 2, strides=1, padding="same"),
        ReLU(),
        MaxPool2D(4, strides=4, padding="same"),
        Flatten(),
        Dense(classes),
    ]


def reference_model(dtype: str = "float32", seed: int | None = 1, classes: int = 6) -> Sequential:
    """SparkNeuralNets' reference network, built for 64x64x3 input with Glorot-uniform kernels and zero biases."""
    return Sequential(reference_layers(classes), dtype=dtype).build(INPUT_SHAPE, seed=seed)


def reference_optimizer(learning_rate: float = LEARNING_RATE) -> Adam:
    """Adam(lr 0.009, β1 0.9, β2 0.999, ε 1e-8), SparkNeuralNets' settings."""
    return Adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
