"""Layers with TensorFlow layouts (NHWC, (fh, fw, cin, cout) and (in, out) kernels) and semantics."""

from xpnn.layers.activations import ELU, GELU, Activation, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from xpnn.layers.base import Layer
from xpnn.layers.conv import Conv2D
from xpnn.layers.dense import Dense
from xpnn.layers.depthwise import DepthwiseConv2D, SeparableConv2D
from xpnn.layers.dropout import Dropout
from xpnn.layers.flatten import Flatten
from xpnn.layers.global_pool import GlobalAveragePooling2D, GlobalMaxPooling2D
from xpnn.layers.normalization import BatchNormalization
from xpnn.layers.pool import AvgPool2D, MaxPool2D
from xpnn.layers.reshape import Reshape, ZeroPadding2D
from xpnn.layers.serialization import layer_classes, register_keras_serializable

MaxPooling2D = MaxPool2D
AveragePooling2D = AvgPool2D
GlobalAvgPool2D = GlobalAveragePooling2D
GlobalMaxPool2D = GlobalMaxPooling2D
Convolution2D = Conv2D
SeparableConvolution2D = SeparableConv2D

__all__ = [
    "Activation",
    "AvgPool2D",
    "AveragePooling2D",
    "BatchNormalization",
    "Conv2D",
    "Convolution2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "ELU",
    "Flatten",
    "GELU",
    "GlobalAveragePooling2D",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "GlobalMaxPooling2D",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "MaxPooling2D",
    "ReLU",
    "Reshape",
    "SeparableConv2D",
    "SeparableConvolution2D",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "ZeroPadding2D",
    "layer_classes",
    "register_keras_serializable",
]
