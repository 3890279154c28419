"""Losses on logits: a loss returns the batch cost (a 0-d array) and d cost / d logits.

All reduce by the mean, as `tf.reduce_mean(tf.nn.*_with_logits(...))` and keras do.
"""

from __future__ import annotations

from xpnn.backends import get_backend
from xpnn.registry import lookup
from xpnn.types import Array


class Loss:
    """A named loss; `loss(logits, labels)` -> (cost, dlogits) (`keras.losses.Loss`, with its gradient)."""

    name = ""

    def __call__(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits)) over the batch.

    Labels may be one-hot, soft, or any real rows. The gradient returned is TensorFlow's
    (softmax − labels) / n. It is the true gradient of the cost only when each label row sums
    to 1; for other rows (e.g. SparkNeuralNets' random-normal labels) the true one is
    (softmax · Σlabels − labels) / n, but xpnn matches what TensorFlow computes.
    """

    name = "softmax_cross_entropy"

    def __call__(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        loss, backprop = get_backend().kernels.softmax_xent(logits, labels)
        n = logits.shape[0]
        backprop /= float(n)
        return loss.mean(), backprop


class SigmoidCrossEntropy(Loss):
    """mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)) over every element."""

    name = "sigmoid_cross_entropy"

    def __call__(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        xp = get_backend().xp
        elementwise = xp.maximum(logits, 0.0) - logits * labels + xp.log1p(xp.exp(-xp.abs(logits)))
        sigmoid = xp.exp(-xp.logaddexp(0.0, -logits))
        return elementwise.mean(), (sigmoid - labels) / float(logits.size)


class MeanSquaredError(Loss):
    """mean((pred − labels)²) over every element, as keras.losses.MeanSquaredError on (n, k)."""

    name = "mse"

    def __call__(self, logits: Array, labels: Array) -> tuple[Array, Array]:
        diff = logits - labels
        return (diff * diff).mean(), diff * (2.0 / float(logits.size))


softmax_cross_entropy = SoftmaxCrossEntropy()
sigmoid_cross_entropy = SigmoidCrossEntropy()
mse = MeanSquaredError()

LOSSES: dict[str, Loss] = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "categorical_crossentropy": softmax_cross_entropy,
    "sigmoid_cross_entropy": sigmoid_cross_entropy,
    "mse": mse,
    "mean_squared_error": mse,
}


def get_loss(spec: str | Loss) -> Loss:
    """A Loss from a name ("softmax_cross_entropy", "sigmoid_cross_entropy", "mse") or itself (`keras.losses.get`)."""
    if isinstance(spec, Loss):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"loss must be a name or an xpnn.losses.Loss; got {type(spec).__name__}.")
    return lookup("loss", spec, LOSSES)
