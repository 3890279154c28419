"""Layers with TensorFlow layouts (NHWC, (fh, fw, cin, cout) and (in, out) kernels) and semantics."""

from xpnn.layers.activations import ReLU, Sigmoid, Softmax, Tanh
from xpnn.layers.base import Layer
from xpnn.layers.conv import Conv2D
from xpnn.layers.dense import Dense
from xpnn.layers.flatten import Flatten
from xpnn.layers.pool import AvgPool2D, MaxPool2D

MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D

__all__ = [
    "AvgPool2D",
    "AveragePooling2D",
    "Conv2D",
    "Dense",
    "Flatten",
    "Layer",
    "MaxPool2D",
    "MaxPooling2D",
    "ReLU",
    "Sigmoid",
    "Softmax",
    "Tanh",
]
