/* Optimizer updates in one pass over each parameter (included by native.c once per type, like native_pool.h).
 *
 * The NumPy twin is xpnn/backends/numpy_backend.py's adam_update, TensorFlow's ApplyAdam:
 *     m += (g − m)·(1 − β1);  v += (g² − v)·(1 − β2);  w −= m·alpha / (√v + ε)
 * NumPy runs it as ten passes over temporaries; this loop reads g, m, v, w once and writes m, v, w once,
 * with the same operations in the same order, each rounded to T: the same bits. GCC would otherwise fuse a
 * multiply and an add into one FMA (one rounding instead of two), so contraction is off for this function. */

#ifndef TSQRT
#define TSQRT(x) _Generic((x), float: sqrtf, double: sqrt)(x) /* sqrt in T, correctly rounded as NumPy's */
#endif

#pragma GCC push_options
#pragma GCC optimize("-ffp-contract=off") /* pyproject builds with -fno-math-errno: sqrt vectorises */
CLONES void NAME(adam_update)(T *w, const T *g, T *m, T *v, int64_t size, T alpha, T one_minus_beta_1,
                              T one_minus_beta_2, T epsilon)
{
    for (int64_t i = 0; i < size; i++) {
        const T gi = g[i];
        const T mi = m[i] + (gi - m[i]) * one_minus_beta_1;
        const T vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] - (mi * alpha) / (TSQRT(vi) + epsilon);
    }
}
#pragma GCC pop_options
