"""BatchNormalization → ReLU as one plan unit (xpnn.layers.fused.plan), as ConvRelu pairs Conv2D → ReLU.

The pair computes what the two layers compute, bit for bit, in fewer passes: the forward writes
relu(x·inv + shift) in the normalisation's output pass (no pre-activation array, no second pass), and the
backward masks dout by the ReLU's output (TF's ReluGrad, dout·(out > 0)) inside the BatchNormalization
backward's passes (native_norm.h on the NumPy backend; its NumPy twin elsewhere). The moving statistics move
exactly as the layer's own forward moves them: the unit calls it.

Conv2D → BatchNormalization → ReLU (`ConvBatchNormRelu`) adds the conv in front: in inference the moving
statistics' x·inv + shift and the ReLU run in the conv's epilogue, on each chunk before it is stored
(conv_chunks' `affine`, native_igemm.h), so the BatchNormalization costs neither a pass nor an array.
"""

from __future__ import annotations

from xpnn.layers import conv_chunks
from xpnn.layers.activations import ReLU
from xpnn.layers.base import Layer
from xpnn.layers.conv import Conv2D
from xpnn.layers.normalization import BatchNormalization, BatchNormCache
from xpnn.types import Array


class BatchNormRelu:
    """BatchNormalization → ReLU as one unit; its backward returns the two layers' gradient dicts."""

    def __init__(self, norm: BatchNormalization, relu: ReLU) -> None:
        self.layers = (norm, relu)

    @staticmethod
    def applies(norm: Layer, relu: Layer) -> bool:
        """Exactly a BatchNormalization then a plain ReLU (no subclass, whose math may differ), on any backend."""
        return type(norm) is BatchNormalization and type(relu) is ReLU

    def forward(self, x: Array, training: bool = False) -> tuple[Array, BatchNormCache]:
        return self.layers[0].forward(x, training=training, relu=True)

    def backward(self, dout: Array, cache: BatchNormCache, need_dx: bool = True) -> tuple[Array | None, list[dict]]:
        dx, grads = self.layers[0].backward(dout, cache, need_dx)
        return dx, [grads, {}]


class ConvBatchNormRelu:
    """Conv2D → BatchNormalization → ReLU as one unit; its backward returns the three layers' gradient dicts.

    Training runs the conv, then the BatchNormalization → ReLU unit (the batch statistics need the whole conv
    output first). Inference on the CPU runs one chunked conv whose epilogue is + b, · inv + shift, max(·, 0):
    the rounding steps of the three layers one by one, so the same bits (tests/test_native_norm.py).
    """

    def __init__(self, conv: Conv2D, norm: BatchNormalization, relu: ReLU) -> None:
        self.layers = (conv, norm, relu)
        self._pair = BatchNormRelu(norm, relu)

    @staticmethod
    def applies(conv: Layer, norm: Layer, relu: Layer) -> bool:
        """A plain Conv2D (no activation of its own, no subclass) before a BatchNormalization → ReLU pair."""
        return type(conv) is Conv2D and conv.activation.is_linear and BatchNormRelu.applies(norm, relu)

    def _fused(self, x: Array) -> bool:
        conv, norm, _ = self.layers
        return conv_chunks.takes(conv, x) and norm._axes == tuple(range(x.ndim - 1))  # channels last

    def _layer_by_layer(self, x: Array, training: bool):
        out, conv_cache = self.layers[0].forward(x)
        y, norm_cache = self._pair.forward(out, training=training)
        return y, (conv_cache, norm_cache)

    def forward(self, x: Array, training: bool = False):
        if training or not self._fused(x):
            return self._layer_by_layer(x, training)
        conv, norm, _ = self.layers
        p = conv.params
        y, _ = conv_chunks.conv2d_forward_chunked(
            conv, x, p["w"], p.get("b"), conv.strides, conv.padding, relu=True, affine=norm.inference_affine()
        )
        return y, (None, x)  # an inference pass keeps nothing; a backward after it recomputes the layers' caches

    def backward(self, dout: Array, cache, need_dx: bool = True):
        conv_cache, norm_cache = cache
        if conv_cache is None:  # after the fused inference forward (rare: a backward in inference mode)
            _, (conv_cache, norm_cache) = self._layer_by_layer(norm_cache, training=False)
        d, (norm_grads, relu_grads) = self._pair.backward(dout, norm_cache, True)
        dx, conv_grads = self.layers[0].backward(d, conv_cache, need_dx)
        return dx, [conv_grads, norm_grads, relu_grads]
