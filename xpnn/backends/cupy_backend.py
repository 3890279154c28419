"""CuPy kernels: the CUDA twins of `numpy_backend`'s kernels, same names and signatures.

Imported only once `cupy` and a CUDA device are known to be present.

Each kernel computes its twin's operations in the same order, and is compiled with `--fmad=false` (`OPTIONS`):
NVRTC would otherwise contract `a * b + c` into one fused multiply-add, rounded once where NumPy rounds
twice, and the kernel would differ from its twin in the last bit. What still differs: CuPy compiles every
kernel with `-ftz=true`, so float32 denormals (|x| < 1.2e-38) read and written by a kernel become ±0, where
NumPy keeps them (float64 is never flushed). TensorFlow's CPU kernels flush them too.
`scripts/check_cuda_kernels.py` compiles each kernel with NVRTC as CuPy does and checks for FMAs.
"""

from __future__ import annotations

import cupy as cp


def synchronize() -> None:
    """Wait for the current device's queued work."""
    cp.cuda.get_current_stream().synchronize()


def copy_runs(dst: cp.ndarray, src: cp.ndarray) -> None:
    """dst[...] = src (on the GPU one elementwise copy kernel already moves runs efficiently)."""
    cp.copyto(dst, src)


def gather_runs(src: cp.ndarray, index: tuple[cp.ndarray, ...]) -> cp.ndarray:
    """src[index] for integer index arrays over the leading axes."""
    return src[index]


OPTIONS = ("--fmad=false",)  # no fused multiply-add: each product and sum rounds as NumPy's does

# TensorFlow's ReluGrad, `gradients * (features > 0)`: a NaN or Inf gradient where the output is not positive
# gives NaN (never a silent 0), and a negative gradient there gives -0, as the twin's product does
relu_grad = cp.ElementwiseKernel("T dout, T out", "T dx", "dx = dout * (T)(out > 0)", "xpnn_relu_grad", options=OPTIONS)


def erf(x: cp.ndarray) -> cp.ndarray:
    """The error function, element-wise (CUDA's erf, ≤ 2 ulp)."""
    from cupyx.scipy.special import erf as cupy_erf

    return cupy_erf(x)


def erfc(x: cp.ndarray) -> cp.ndarray:
    """1 − erf(x) without the cancellation for large x (CUDA's erfc)."""
    from cupyx.scipy.special import erfc as cupy_erfc

    return cupy_erfc(x)


def softmax_xent(logits: cp.ndarray, labels: cp.ndarray) -> tuple[cp.ndarray, cp.ndarray]:
    """Per-row loss and backprop of tf.nn.softmax_cross_entropy_with_logits, (n, k) -> (n,), (n, k)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = cp.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    loss = (labels * (cp.log(sum_exp) - shifted)).sum(axis=1)
    backprop = exp / sum_exp - labels
    # Where the top class's probability rounds to 1 (sum_exp == 1), 1 − p is the other classes' tail, not 0:
    # keep it (TF issue #126634). Every other entry is left bit for bit as TF 2.21 computes it.
    rounds_to_one = (shifted == 0) & (sum_exp == 1.0)
    backprop -= rounds_to_one * (exp * (shifted < 0)).sum(axis=1, keepdims=True)
    return loss, backprop


_adam = cp.ElementwiseKernel(
    "T g, T alpha, T one_minus_beta_1, T one_minus_beta_2, T epsilon",
    "T w, T m, T v",
    """
    m += (g - m) * one_minus_beta_1;
    v += (g * g - v) * one_minus_beta_2;
    w -= (m * alpha) / (sqrt(v) + epsilon);
    """,
    "xpnn_adam_update",
    options=OPTIONS,
)


def adam_update(
    w: cp.ndarray,
    g: cp.ndarray,
    m: cp.ndarray,
    v: cp.ndarray,
    alpha: float,
    one_minus_beta_1: float,
    one_minus_beta_2: float,
    epsilon: float,
) -> None:
    """In place, TensorFlow's ApplyAdam: m += (g-m)(1-b1); v += (g²-v)(1-b2); w -= m·alpha/(√v+eps)."""
    t = w.dtype.type
    _adam(g, t(alpha), t(one_minus_beta_1), t(one_minus_beta_2), t(epsilon), w, m, v)


_sgd = cp.ElementwiseKernel("T g, T learning_rate", "T w", "w -= g * learning_rate", "xpnn_sgd_update", options=OPTIONS)


def sgd_update(w: cp.ndarray, g: cp.ndarray, learning_rate: float) -> None:
    """In place, TensorFlow's ApplyGradientDescent: w -= lr * g."""
    _sgd(g, w.dtype.type(learning_rate), w)
