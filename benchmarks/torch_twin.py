"""The one PyTorch builder of the benchmarks: a copy of an xpnn Sequential, same weights, TensorFlow's SAME pads.

bench_cpu.py (through peers.py) and bench_gpu.py both build their PyTorch side here. PyTorch pads
symmetrically, so TF's SAME pads go into the conv or pool call where they are symmetric (and, for a
max pool, at most half the window, PyTorch's limit) and through an explicit F.pad otherwise (-inf for
max-pool). A SAME average pool divides by its real cells as TF does (count_include_pad=False, or a
precomputed count of real cells where the pads are uneven). Flatten permutes NCHW back to NHWC order,
so the dense weights are xpnn's (and TensorFlow's).
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


def _symmetric(pads) -> tuple[int, int] | None:
    """(pad_h, pad_w) when TF's pads are the same on both sides, else None."""
    (top, bottom), (left, right) = pads
    return (top, left) if top == bottom and left == right else None


def _conv(layer: xpnn.Conv2D, in_hw, w, b) -> nn.Module:
    pads = pads_2d(in_hw, layer.kernel_size, layer.strides, layer.padding)
    even = _symmetric(pads)
    conv = nn.Conv2d(
        w.shape[2],
        w.shape[3],
        layer.kernel_size,
        stride=layer.strides,
        padding=even or 0,
        bias=b is not None,
        dtype=_dtype(w),
    )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w).permute(3, 2, 0, 1))
        if b is not None:
            conv.bias.copy_(torch.from_numpy(b))
    if even is not None:
        return conv
    (top, bottom), (left, right) = pads
    return nn.Sequential(_Op(lambda x: F.pad(x, (left, right, top, bottom))), conv)


def _pool(layer, in_hw, maximum: bool) -> nn.Module:
    pads = pads_2d(in_hw, layer.pool_size, layer.strides, layer.padding)
    (top, bottom), (left, right) = pads
    k, s, even = layer.pool_size, layer.strides, _symmetric(pads)
    if maximum:
        if even is not None and 2 * even[0] <= k[0] and 2 * even[1] <= k[1]:
            return _Op(lambda x: F.max_pool2d(x, k, s, padding=even))
        return _Op(lambda x: F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), k, s))
    if even is not None and 2 * even[0] <= k[0] and 2 * even[1] <= k[1]:
        return _Op(lambda x: F.avg_pool2d(x, k, s, padding=even, count_include_pad=False))
    ones = F.pad(torch.ones(1, 1, *in_hw), (left, right, top, bottom))
    scale = (k[0] * k[1]) / F.avg_pool2d(ones, k, s, divisor_override=1)  # window size / real cells
    return _Op(lambda x: F.avg_pool2d(F.pad(x, (left, right, top, bottom)), k, s) * scale.to(x.dtype))


def torch_twin(model: xpnn.Sequential, device: str = "cpu") -> nn.Sequential:
    """nn.Sequential computing what `model` computes (NCHW inside), with its current weights.

    A ReLU stays its own module (PyTorch's eager mode fuses nothing either way).
    """
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
        elif isinstance(layer, xpnn.BatchNormalization):  # torch's momentum weighs the new batch: 1 - Keras's
            gamma, beta, mean, var = (next(weights) for _ in range(4))  # center and scale on (the defaults)
            kind = nn.BatchNorm2d if in_hw is not None else nn.BatchNorm1d
            bn = kind(len(mean), eps=layer.epsilon, momentum=1.0 - layer.momentum, dtype=_dtype(mean))
            with torch.no_grad():
                for tensor, value in ((bn.weight, gamma), (bn.bias, beta), (bn.running_mean, mean),
                                      (bn.running_var, var)):  # fmt: skip
                    tensor.copy_(torch.from_numpy(value))
            mods.append(bn)
        elif isinstance(layer, xpnn.Dropout):
            mods.append(nn.Dropout(layer.rate))
        elif isinstance(layer, xpnn.GlobalAveragePooling2D):
            mods.append(_Op(lambda x: x.mean(dim=(2, 3))))
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
