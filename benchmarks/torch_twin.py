"""A PyTorch copy of an xpnn Sequential, same weights and TensorFlow's SAME pads, for side-by-side benchmarks.

PyTorch pads symmetrically, so TF's uneven SAME pads are applied explicitly (F.pad; -inf for max-pool),
and Flatten permutes NCHW back to NHWC order so the dense weights are xpnn's (and TensorFlow's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import xpnn
from xpnn.layers.padding import pads_2d


def _dtype(w) -> torch.dtype:
    return torch.from_numpy(w[:0]).dtype


class _Op(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _conv(layer: xpnn.Conv2D, in_hw, w, b) -> nn.Module:
    (top, bottom), (left, right) = pads_2d(in_hw, layer.kernel_size, layer.strides, layer.padding)
    conv = nn.Conv2d(
        w.shape[2], w.shape[3], layer.kernel_size, stride=layer.strides, bias=b is not None, dtype=_dtype(w)
    )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w).permute(3, 2, 0, 1))
        if b is not None:
            conv.bias.copy_(torch.from_numpy(b))
    if top == bottom == left == right == 0:
        return conv
    return nn.Sequential(_Op(lambda x: F.pad(x, (left, right, top, bottom))), conv)


def _pool(layer, in_hw, maximum: bool) -> nn.Module:
    (top, bottom), (left, right) = pads_2d(in_hw, layer.pool_size, layer.strides, layer.padding)
    k, s = layer.pool_size, layer.strides
    if maximum:
        return _Op(lambda x: F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), k, s))
    if top == bottom == left == right == 0:
        return _Op(lambda x: F.avg_pool2d(x, k, s))
    raise NotImplementedError("TF-SAME average pooling with padding has no direct PyTorch twin here")


def torch_twin(model: xpnn.Sequential, device: str = "cpu") -> nn.Sequential:
    """nn.Sequential computing what `model` computes (NCHW inside), with its current weights."""
    weights = iter(model.get_weights())
    mods: list[nn.Module] = []
    for layer in model.layers:
        in_hw = tuple(layer.input_shape[:2]) if len(layer.input_shape) == 3 else None
        if isinstance(layer, xpnn.Conv2D):
            w = next(weights)
            mods.append(_conv(layer, in_hw, w, next(weights) if layer.use_bias else None))
        elif isinstance(layer, (xpnn.MaxPool2D, xpnn.AvgPool2D)):
            mods.append(_pool(layer, in_hw, isinstance(layer, xpnn.MaxPool2D)))
        elif isinstance(layer, xpnn.ReLU):
            mods.append(nn.ReLU())
        elif isinstance(layer, xpnn.Flatten):
            mods.append(_Op(lambda x: x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)))
        elif isinstance(layer, xpnn.Dense):
            w = next(weights)
            b = next(weights) if layer.use_bias else None
            lin = nn.Linear(w.shape[0], w.shape[1], bias=b is not None, dtype=_dtype(w))
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(w).T)
                if b is not None:
                    lin.bias.copy_(torch.from_numpy(b))
            mods.append(lin)
        else:
            raise NotImplementedError(f"no PyTorch twin for {layer!r}")
    return nn.Sequential(*mods).to(device)


def torch_adam(net: nn.Module, opt: xpnn.Adam) -> torch.optim.Adam:
    """torch.optim.Adam with xpnn's settings (PyTorch uses the paper's form; close, not bit-equal)."""
    return torch.optim.Adam(net.parameters(), lr=opt.learning_rate, betas=(opt.beta_1, opt.beta_2), eps=opt.epsilon)
