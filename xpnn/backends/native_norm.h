/* BatchNormalization on channels-last input (included by native.c once per type, like native_pool.h).
 *
 * x is viewed as (rows, c), c the feature axis (keras.layers.BatchNormalization(axis=-1)); each kernel
 * is one pass over its rows, channels the inner, contiguous loop, which the compiler vectorises. The NumPy
 * twin is xpnn/layers/normalization.py's channels-last path, and these loops give its bits:
 * - reductions (the batch mean, the sum of squared deviations, the backward's Σd and Σd·xhat) sum blocks
 *   of `block` rows each, every block from its first row on in row order (numpy's sum(axis=1) of the
 *   (blocks, block, c) view), into one partial row per block. The caller adds the partial rows in block
 *   order, so a result does not depend on how the blocks were shared among threads;
 * - elementwise passes round each operation as NumPy does: x·inv + shift is a product, rounded, then a sum.
 * No multiply-add is fused, so that NumPy's bits stay reachable: GCC contracts x·y + z across statements
 * by default (-ffp-contract=fast), hence the pragmas. The optional ReLU (the BatchNormalization → ReLU plan
 * unit) is np.maximum(y, 0) forward (NaN stays, -0 gives +0) and TF's ReluGrad dout·(out > 0) backward. */

#ifndef NATIVE_NORM_ONCE
#define NATIVE_NORM_ONCE
#if defined(__clang__)
#define NORM_NO_CONTRACT _Pragma("STDC FP_CONTRACT OFF")
#else
#define NORM_NO_CONTRACT
#endif
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif

/* partial[k] (c) = Σ over block k's rows of x (mean NULL) or of (x − mean)², mean (c): the batch moments'
 * two passes, as tf.nn.moments (mean, then the mean of squared deviations). */
CLONES int NAME(bn_block_sums)(const T *x, const T *mean, int64_t rows, int64_t c, int64_t block, T *partial)
{
    NORM_NO_CONTRACT
    for (int64_t r0 = 0, k = 0; r0 < rows; r0 += block, k++) {
        const int64_t r1 = r0 + block < rows ? r0 + block : rows;
        T *acc = partial + k * c;
        if (mean == NULL) {
            memcpy(acc, x + r0 * c, (size_t)c * sizeof(T));
            for (int64_t r = r0 + 1; r < r1; r++) {
                const T *row = x + r * c;
                for (int64_t ch = 0; ch < c; ch++)
                    acc[ch] += row[ch];
            }
            continue;
        }
        for (int64_t ch = 0; ch < c; ch++) {
            const T d = x[r0 * c + ch] - mean[ch];
            acc[ch] = d * d;
        }
        for (int64_t r = r0 + 1; r < r1; r++) {
            const T *row = x + r * c;
            for (int64_t ch = 0; ch < c; ch++) {
                const T d = row[ch] - mean[ch];
                const T sq = d * d;
                acc[ch] += sq;
            }
        }
    }
    return 0;
}

/* One row's gradient (c): dout, or dout masked as TF's ReluGrad, dout·(out > 0), by the fused ReLU's output
 * (out NULL: none), written into d and returned. The branch sits outside the channel loop, which vectorises. */
static inline const T *NAME(bn_grad_row)(const T *dout, const T *out, int64_t c, T *d)
{
    if (out == NULL)
        return dout;
    for (int64_t ch = 0; ch < c; ch++) {
        const T keep = out[ch] > 0 ? (T)1 : (T)0;
        d[ch] = dout[ch] * keep;
    }
    return d;
}

/* dbeta[k], dgamma[k] (c) = Σ over block k's rows of d and of d·xhat, xhat = (x − mean)·rstd recomputed
 * (the forward keeps no xhat), d as bn_grad_row gives it. Returns 0, or -1 when out of memory. */
CLONES int NAME(bn_backward_sums)(const T *dout, const T *out, const T *x, const T *mean, const T *rstd, int64_t rows,
                                  int64_t c, int64_t block, T *dbeta, T *dgamma)
{
    NORM_NO_CONTRACT
    T *d = malloc((size_t)c * sizeof(T));
    if (d == NULL)
        return -1;
    for (int64_t r0 = 0, k = 0; r0 < rows; r0 += block, k++) {
        const int64_t r1 = r0 + block < rows ? r0 + block : rows;
        T *db = dbeta + k * c, *dg = dgamma + k * c;
        for (int64_t r = r0; r < r1; r++) {
            const T *xr = x + r * c;
            const T *g = NAME(bn_grad_row)(dout + r * c, out ? out + r * c : NULL, c, d);
            if (r == r0)
                for (int64_t ch = 0; ch < c; ch++) {
                    const T xhat = (xr[ch] - mean[ch]) * rstd[ch];
                    db[ch] = g[ch];
                    dg[ch] = g[ch] * xhat;
                }
            else
                for (int64_t ch = 0; ch < c; ch++) {
                    const T xhat = (xr[ch] - mean[ch]) * rstd[ch];
                    const T p = g[ch] * xhat;
                    db[ch] += g[ch];
                    dg[ch] += p;
                }
        }
    }
    free(d);
    return 0;
}

/* out (rows, c) = x·inv + shift, TF's tf.nn.batch_normalization with inv = gamma·rsqrt(var + ε) and
 * shift = beta − mean·inv (computed by the caller); with relu, max(·, 0) as np.maximum. */
CLONES int NAME(bn_apply)(const T *x, const T *inv, const T *shift, int64_t rows, int64_t c, int relu, T *out)
{
    NORM_NO_CONTRACT
    for (int64_t r = 0; r < rows; r++) {
        const T *row = x + r * c;
        T *o = out + r * c;
        if (relu)
            for (int64_t ch = 0; ch < c; ch++) {
                const T p = row[ch] * inv[ch];
                const T y = p + shift[ch];
                o[ch] = (y > 0 || y != y) ? y : (T)0;
            }
        else
            for (int64_t ch = 0; ch < c; ch++) {
                const T p = row[ch] * inv[ch];
                o[ch] = p + shift[ch];
            }
    }
    return 0;
}

/* dx (rows, c): in training (mean not NULL) ((d − a) − xhat·b)·scale, a = Σd / count, b = Σd·xhat / count,
 * the gradient through the batch statistics; in inference (mean NULL) d·scale. scale = gamma·rstd; d as
 * bn_grad_row gives it (in dx's row when masked). */
CLONES int NAME(bn_backward_apply)(const T *dout, const T *out, const T *x, const T *mean, const T *rstd,
                                   const T *scale, const T *a, const T *b, int64_t rows, int64_t c, T *dx)
{
    NORM_NO_CONTRACT
    for (int64_t r = 0; r < rows; r++) {
        T *o = dx + r * c;
        const T *g = NAME(bn_grad_row)(dout + r * c, out ? out + r * c : NULL, c, o);
        if (mean == NULL)
            for (int64_t ch = 0; ch < c; ch++)
                o[ch] = g[ch] * scale[ch];
        else {
            const T *xr = x + r * c;
            for (int64_t ch = 0; ch < c; ch++) {
                const T xhat = (xr[ch] - mean[ch]) * rstd[ch];
                const T centred = g[ch] - a[ch];
                const T q = xhat * b[ch];
                o[ch] = (centred - q) * scale[ch];
            }
        }
    }
    return 0;
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
