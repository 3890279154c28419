"""NumPy kernels: the CPU twins of `cupy_backend`'s kernels, same names and signatures.

Each function computes exactly what its CuPy twin computes, in the same order of
operations, so both round alike and one test parameterization covers the pair.
"""

from __future__ import annotations

import numpy as np


def synchronize() -> None:
    """Nothing is queued on the CPU."""


def _runs_as_items(a: np.ndarray) -> np.ndarray:
    """`a` without its last axis, each contiguous last-axis run seen as one opaque item of that many bytes."""
    raw = a.view(np.uint8)  # the last axis must be contiguous: its stride is the itemsize
    return raw.view(np.dtype((np.void, raw.shape[-1])))[..., 0]


def copy_runs(dst: np.ndarray, src: np.ndarray) -> None:
    """dst[...] = src for arrays whose last axis is contiguous in both, moving each last-axis run as one item.

    NumPy copies short inner runs value by value with a loop per run; one opaque item per run makes each a
    single memcpy (im2col's rows of span·cin values and the pooling transpose got ~40 % faster).
    """
    np.copyto(_runs_as_items(dst), _runs_as_items(src))


def gather_runs(src: np.ndarray, index: tuple[np.ndarray, ...]) -> np.ndarray:
    """src[index] for integer index arrays over the leading axes, each contiguous last-axis run moved as one item."""
    items = np.ascontiguousarray(_runs_as_items(src)[index])  # indexing may lay the result out in another order
    return items.view(src.dtype).reshape(*items.shape, src.shape[-1])


def relu_grad(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """dx = dout where the ReLU output is positive, else 0·dout: TensorFlow's ReluGrad, `gradients * (features > 0)`.

    The product, not a select: a NaN or Inf dout where the output is not positive gives NaN (never a silent 0),
    and a negative one gives -0, as in TensorFlow.
    """
    return dout * (out > 0)


def softmax_xent(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss and backprop of tf.nn.softmax_cross_entropy_with_logits, (n, k) -> (n,), (n, k).

    loss = sum(labels * (log(sum(exp(z - max))) - (z - max))); backprop = softmax(z) - labels.
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    loss = (labels * (np.log(sum_exp) - shifted)).sum(axis=1)
    backprop = exp / sum_exp - labels
    # Where the top class's probability rounds to 1 (sum_exp == 1), 1 − p is the other classes' tail, not 0:
    # keep it (TF issue #126634). Every other entry is left bit for bit as TF 2.21 computes it.
    rounds_to_one = (shifted == 0) & (sum_exp == 1.0)
    backprop -= rounds_to_one * (exp * (shifted < 0)).sum(axis=1, keepdims=True)
    return loss, backprop


def adam_update(
    w: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    alpha: float,
    one_minus_beta_1: float,
    one_minus_beta_2: float,
    epsilon: float,
) -> None:
    """In place, TensorFlow's ApplyAdam: m += (g-m)(1-b1); v += (g²-v)(1-b2); w -= m·alpha/(√v+eps)."""
    tmp = g - m
    tmp *= one_minus_beta_1
    m += tmp
    np.multiply(g, g, out=tmp)
    tmp -= v
    tmp *= one_minus_beta_2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += epsilon
    step = m * alpha
    step /= tmp
    w -= step


def sgd_update(w: np.ndarray, g: np.ndarray, learning_rate: float) -> None:
    """In place, TensorFlow's ApplyGradientDescent: w -= lr * g."""
    w -= g * learning_rate
