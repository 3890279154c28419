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


# erf as Cephes computes it (S. L. Moshier, ndtr.c; coefficients from Hart et al., "Computer Approximations"):
# x·T(x²)/U(x²) on |x| ≤ 1, else 1 − exp(−x²)·P(|x|)/Q(|x|) (|x| < 8) or ·R/S; ≤ 4e-16 relative on float64.
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)  # fmt: skip
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)  # fmt: skip
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)  # fmt: skip
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)  # fmt: skip
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)  # fmt: skip
_ERFC_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)  # fmt: skip


def _poly(coefs: tuple[float, ...], z: np.ndarray) -> np.ndarray:
    """Horner's rule, highest power first."""
    out = np.full_like(z, coefs[0])
    for c in coefs[1:]:
        out *= z
        out += c
    return out


def _erf_core(x: np.ndarray) -> np.ndarray:
    """erf on |x| ≤ 1 (x clipped there first, so no polynomial overflows elsewhere)."""
    xs = np.clip(x, -1.0, 1.0)
    zs = xs * xs
    return xs * _poly(_ERF_T, zs) / _poly(_ERF_U, zs)


def _erfc_tail(x: np.ndarray) -> np.ndarray:
    """erfc(|x|) for |x| ≥ 1 (|x| clipped to [1, 30]; erfc(30) underflows to 0)."""
    a = np.clip(np.abs(x), 1.0, 30.0)
    ratio = np.where(a < 8.0, _poly(_ERFC_P, a) / _poly(_ERFC_Q, a), _poly(_ERFC_R, a) / _poly(_ERFC_S, a))
    with np.errstate(under="ignore"):
        return np.exp(-(a * a)) * ratio


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, element-wise (tf.math.erf; NumPy has none). NaN stays NaN."""
    return np.where(np.abs(x) <= 1.0, _erf_core(x), np.copysign(1.0 - _erfc_tail(x), x))


def erfc(x: np.ndarray) -> np.ndarray:
    """1 − erf(x) without the cancellation for large x (tf.math.erfc). NaN stays NaN."""
    tail = _erfc_tail(x)
    return np.where(np.abs(x) < 1.0, 1.0 - _erf_core(x), np.where(x < 0, 2.0 - tail, tail))


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
    """In place, TensorFlow's ApplyAdam: m += (g-m)(1-b1); v += (g²-v)(1-b2); w -= m·alpha/(√v+eps).

    The twin of native.adam_update (native_optim.h, one pass, the same bits), which Adam calls first.
    """
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
