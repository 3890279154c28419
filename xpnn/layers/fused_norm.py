"""BatchNormalization → ReLU as one plan unit (xpnn.layers.fused.plan), as ConvRelu pairs Conv2D → ReLU.

The pair computes what the two layers compute, bit for bit, in fewer passes: the forward writes
relu(x·inv + shift) in the normalisation's output pass (no pre-activation array, no second pass), and the
backward masks dout by the ReLU's output (TF's ReluGrad, dout·(out > 0)) inside the BatchNormalization
backward's passes (native_norm.h on the NumPy backend; its NumPy twin elsewhere). The moving statistics move
exactly as the layer's own forward moves them: the unit calls it.
"""

from __future__ import annotations

from xpnn.layers.activations import ReLU
from xpnn.layers.base import Layer
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
