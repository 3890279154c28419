/* BatchNormalization on channels-last input (included by native.c once per type, like native_pool.h).
 *
 * x is viewed as (rows, c), c the feature axis (keras.layers.BatchNormalization(axis=-1)); each kernel
 * is one pass over its rows, channels the inner, contiguous loop, which the compiler vectorises. The NumPy
 * twin is xpnn/layers/normalization.py's channels-last path, and these loops give its bits:
 * - reductions (the batch mean, the sum of squared deviations, the backward's Σd and Σd·xhat) sum blocks
 *   of `block` rows each into one partial row per block: a whole block as `lanes` interleaved lanes, each
 *   in row order, then the lanes in order (numpy's sum(axis=1) of the (blocks, block / lanes, lanes·c) view,
 *   then of the (blocks, lanes, c) one); the short last block in row order. The caller adds the partial rows
 *   in block order, so a result does not depend on how the blocks were shared among threads;
 * - elementwise passes round each operation as NumPy does: x·inv + shift is a product, rounded, then a sum.
 * Channels go in tiles of 4 vectors, then single vectors, then one by one: a tile's sums, means and scales stay
 * in registers over a block's rows (a loop per row over 32 channels cost more than its arithmetic).
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

typedef T NAME(nvec) __attribute__((vector_size(32))); /* 8 floats or 4 doubles */
typedef LANE_INT NAME(nmask) __attribute__((vector_size(32)));
#define NVEC NAME(nvec)
#define NMASK NAME(nmask)
#define NL ((int64_t)(32 / sizeof(T))) /* values per vector */
#define TILE 4                          /* vectors per channel tile */
#define ROW_STEP 64                     /* rows per pass of an elementwise tile (kept in L1/L2 for the next tile) */
#define INLINE static inline __attribute__((always_inline))

/* Unaligned vector loads and stores (memcpy compiles to one move, as in native_kernels.h); macros, so that no
 * vector crosses a function boundary by value. */
#define NLOAD(v, p) memcpy(&(v), (p), sizeof(v))
#define NSTORE(p, v) memcpy((p), &(v), sizeof(v))
/* v where keep's lanes are set, else +0 (a select on the bits; NaN lanes pass unchanged). */
#define NKEEP(v, keep) ((NVEC)((NMASK)(v) & (keep)))

/* f = 1 where x·inv + shift > 0 (the fused ReLU's output is positive), else 0: TF's ReluGrad mask as a factor. */
#define NRELU_FACTOR(f, xv, iv, sh)                                                                              \
    do {                                                                                                         \
        const NVEC p_ = (xv) * (iv), y_ = p_ + (sh), one_ = (NVEC){0} + (T)1;                                    \
        (f) = NKEEP(one_, y_ > 0);                                                                               \
    } while (0)

/* The same for one value. */
INLINE T NAME(relu_factor)(T xv, T inv, T shift)
{
    NORM_NO_CONTRACT
    const T p = xv * inv;
    return p + shift > 0 ? (T)1 : (T)0;
}

/* Block sums of channels [ch, ch + nv·NL) over rows [r0, r1): of x, or of (x − mean)², nv vectors in registers. */
INLINE void NAME(sums_tile)(const T *x, const T *mean, int64_t r0, int64_t r1, int64_t c, int64_t ch, int nv,
                            T *acc_out)
{
    NORM_NO_CONTRACT
    NVEC acc[TILE], mu[TILE];
    for (int k = 0; k < nv; k++) {
        NVEC v;
        mu[k] = (NVEC){0};
        if (mean)
            NLOAD(mu[k], mean + ch + k * NL);
        NLOAD(v, x + r0 * c + ch + k * NL);
        if (mean) {
            v = v - mu[k];
            v = v * v;
        }
        acc[k] = v;
    }
    for (int64_t r = r0 + 1; r < r1; r++)
        for (int k = 0; k < nv; k++) {
            NVEC v;
            NLOAD(v, x + r * c + ch + k * NL);
            if (mean) {
                v = v - mu[k];
                v = v * v;
            }
            acc[k] += v;
        }
    for (int k = 0; k < nv; k++)
        NSTORE(acc_out + ch + k * NL, acc[k]);
}

/* acc (c) = the column sums of x (rows, c), of x or of (x − mean)², each column in row order: channels in tiles
 * of TILE vectors, then of one, then one by one. */
INLINE void NAME(column_sums)(const T *x, const T *mean, int64_t rows, int64_t c, T *acc)
{
    NORM_NO_CONTRACT
    int64_t ch = 0;
    for (; ch + TILE * NL <= c; ch += TILE * NL)
        NAME(sums_tile)(x, mean, 0, rows, c, ch, TILE, acc);
    for (; ch + NL <= c; ch += NL)
        NAME(sums_tile)(x, mean, 0, rows, c, ch, 1, acc);
    for (; ch < c; ch++) {
        const T mu = mean ? mean[ch] : (T)0;
        for (int64_t r = 0; r < rows; r++) {
            T v = x[r * c + ch];
            if (mean) {
                v = v - mu;
                v = v * v;
            }
            acc[ch] = r == 0 ? v : acc[ch] + v;
        }
    }
}

/* out (c) = lane (lanes, c) summed over its lanes in lane order. */
static void NAME(add_lanes)(const T *lane, int64_t lanes, int64_t c, T *out)
{
    memcpy(out, lane, (size_t)c * sizeof(T));
    for (int64_t j = 1; j < lanes; j++)
        for (int64_t ch = 0; ch < c; ch++)
            out[ch] += lane[j * c + ch];
}

/* partial[k] (c) = Σ over block k's rows of x (mean NULL) or of (x − mean)²: the batch moments' two passes,
 * as tf.nn.moments (mean, then the mean of squared deviations). A whole block (block rows, a multiple of lanes)
 * is summed as `lanes` interleaved lanes (row r into lane r % lanes; the block viewed as (block / lanes,
 * lanes·c)), then the lanes in order: the NumPy twin's long rows. A shorter last block is summed in row order.
 * mean has lanes·c values (the c means repeated lanes times). Returns 0, or -1 when out of memory. */
CLONES int NAME(bn_block_sums)(const T *x, const T *mean, int64_t rows, int64_t c, int64_t block, int64_t lanes,
                               T *partial)
{
    NORM_NO_CONTRACT
    T *lane = lanes > 1 ? malloc((size_t)(lanes * c) * sizeof(T)) : NULL;
    if (lanes > 1 && lane == NULL)
        return -1;
    for (int64_t r0 = 0, k = 0; r0 < rows; r0 += block, k++) {
        const int64_t r1 = r0 + block < rows ? r0 + block : rows;
        if (lanes > 1 && r1 - r0 == block) {
            NAME(column_sums)(x + r0 * c, mean, block / lanes, lanes * c, lane);
            NAME(add_lanes)(lane, lanes, c, partial + k * c);
        } else
            NAME(column_sums)(x + r0 * c, mean, r1 - r0, c, partial + k * c);
    }
    free(lane);
    return 0;
}

/* One vector of d and d·xhat at x + at, channels cc: d = dout, masked by the fused ReLU's factor when inv is not
 * NULL; xhat = (x − mean)·rstd, recomputed. */
INLINE void NAME(grad_terms)(const T *dout, const T *x, const T *inv, const T *shift, const T *mean, const T *rstd,
                             int64_t at, int64_t cc, NVEC *d_out, NVEC *p_out)
{
    NORM_NO_CONTRACT
    NVEC xv, d, mu, rs;
    NLOAD(xv, x + at);
    NLOAD(d, dout + at);
    if (inv) {
        NVEC iv, sh, f;
        NLOAD(iv, inv + cc);
        NLOAD(sh, shift + cc);
        NRELU_FACTOR(f, xv, iv, sh);
        d = d * f;
    }
    NLOAD(mu, mean + cc);
    NLOAD(rs, rstd + cc);
    NVEC xhat = xv - mu;
    xhat = xhat * rs;
    *d_out = d;
    *p_out = d * xhat;
}

/* Block sums of d and d·xhat (grad_terms) for channels [ch, ch + nv·NL) over rows [r0, r1), in registers. */
INLINE void NAME(backward_sums_tile)(const T *dout, const T *x, const T *inv, const T *shift, const T *mean,
                                     const T *rstd, int64_t r0, int64_t r1, int64_t c, int64_t ch, int nv, T *db_out,
                                     T *dg_out)
{
    NORM_NO_CONTRACT
    NVEC db[TILE], dg[TILE];
    for (int k = 0; k < nv; k++)
        NAME(grad_terms)(dout, x, inv, shift, mean, rstd, r0 * c + ch + k * NL, ch + k * NL, &db[k], &dg[k]);
    for (int64_t r = r0 + 1; r < r1; r++)
        for (int k = 0; k < nv; k++) {
            NVEC d, p;
            NAME(grad_terms)(dout, x, inv, shift, mean, rstd, r * c + ch + k * NL, ch + k * NL, &d, &p);
            db[k] += d;
            dg[k] += p;
        }
    for (int k = 0; k < nv; k++) {
        NSTORE(db_out + ch + k * NL, db[k]);
        NSTORE(dg_out + ch + k * NL, dg[k]);
    }
}

/* db, dg (c) = the column sums of d and d·xhat over rows (rows, c), each column in row order (backward_sums_tile). */
INLINE void NAME(column_grad_sums)(const T *dout, const T *x, const T *inv, const T *shift, const T *mean,
                                   const T *rstd, int64_t rows, int64_t c, T *db, T *dg)
{
    NORM_NO_CONTRACT
    int64_t ch = 0;
    for (; ch + TILE * NL <= c; ch += TILE * NL)
        NAME(backward_sums_tile)(dout, x, inv, shift, mean, rstd, 0, rows, c, ch, TILE, db, dg);
    for (; ch + NL <= c; ch += NL)
        NAME(backward_sums_tile)(dout, x, inv, shift, mean, rstd, 0, rows, c, ch, 1, db, dg);
    for (; ch < c; ch++)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t at = r * c + ch;
            T d = dout[at];
            if (inv)
                d = d * NAME(relu_factor)(x[at], inv[ch], shift[ch]);
            T xhat = x[at] - mean[ch];
            xhat = xhat * rstd[ch];
            const T p = d * xhat;
            db[ch] = r == 0 ? d : db[ch] + d;
            dg[ch] = r == 0 ? p : dg[ch] + p;
        }
}

/* dbeta[k], dgamma[k] (c) = Σ over block k's rows of d and of d·xhat, xhat = (x − mean)·rstd recomputed (the
 * forward keeps no xhat); d = dout, or with the fused ReLU (inv not NULL) dout masked as TF's ReluGrad,
 * dout·(out > 0), where out > 0 ⟺ x·inv + shift > 0 with the forward's rounding: the output need not be kept.
 * Blocks and lanes as in bn_block_sums; inv, shift, mean, rstd have lanes·c values (each c repeated). Returns 0,
 * or -1 when out of memory. */
CLONES int NAME(bn_backward_sums)(const T *dout, const T *x, const T *inv, const T *shift, const T *mean,
                                  const T *rstd, int64_t rows, int64_t c, int64_t block, int64_t lanes, T *dbeta,
                                  T *dgamma)
{
    NORM_NO_CONTRACT
    T *lane = lanes > 1 ? malloc((size_t)(2 * lanes * c) * sizeof(T)) : NULL;
    if (lanes > 1 && lane == NULL)
        return -1;
    for (int64_t r0 = 0, k = 0; r0 < rows; r0 += block, k++) {
        const int64_t r1 = r0 + block < rows ? r0 + block : rows, at = r0 * c;
        if (lanes > 1 && r1 - r0 == block) {
            T *db = lane, *dg = lane + lanes * c;
            NAME(column_grad_sums)(dout + at, x + at, inv, shift, mean, rstd, block / lanes, lanes * c, db, dg);
            NAME(add_lanes)(db, lanes, c, dbeta + k * c);
            NAME(add_lanes)(dg, lanes, c, dgamma + k * c);
        } else
            NAME(column_grad_sums)(dout + at, x + at, inv, shift, mean, rstd, r1 - r0, c, dbeta + k * c,
                                   dgamma + k * c);
    }
    free(lane);
    return 0;
}

/* out = x·inv + shift (then max(·, 0) with relu) for channels [ch, ch + nv·NL) of rows [r0, r1). */
INLINE void NAME(apply_tile)(const T *x, const T *inv, const T *shift, int64_t r0, int64_t r1, int64_t c, int64_t ch,
                             int nv, int relu, T *out)
{
    NORM_NO_CONTRACT
    NVEC iv[TILE], sh[TILE];
    for (int k = 0; k < nv; k++) {
        NLOAD(iv[k], inv + ch + k * NL);
        NLOAD(sh[k], shift + ch + k * NL);
    }
    for (int64_t r = r0; r < r1; r++)
        for (int k = 0; k < nv; k++) {
            const int64_t at = r * c + ch + k * NL;
            NVEC xv;
            NLOAD(xv, x + at);
            const NVEC p = xv * iv[k];
            const NVEC y = p + sh[k], o = relu ? NKEEP(y, (y > 0) | (y != y)) : y;
            NSTORE(out + at, o);
        }
}

/* out (rows, c) = x·inv + shift, TF's tf.nn.batch_normalization with inv = gamma·rsqrt(var + ε) and
 * shift = beta − mean·inv (computed by the caller); with relu, max(·, 0) as np.maximum (NaN stays, -0 → +0). */
CLONES int NAME(bn_apply)(const T *x, const T *inv, const T *shift, int64_t rows, int64_t c, int relu, T *out)
{
    NORM_NO_CONTRACT
    for (int64_t r0 = 0; r0 < rows; r0 += ROW_STEP) {
        const int64_t r1 = r0 + ROW_STEP < rows ? r0 + ROW_STEP : rows;
        int64_t ch = 0;
        for (; ch + TILE * NL <= c; ch += TILE * NL)
            NAME(apply_tile)(x, inv, shift, r0, r1, c, ch, TILE, relu, out);
        for (; ch + NL <= c; ch += NL)
            NAME(apply_tile)(x, inv, shift, r0, r1, c, ch, 1, relu, out);
        for (; ch < c; ch++)
            for (int64_t r = r0; r < r1; r++) {
                const T p = x[r * c + ch] * inv[ch];
                const T y = p + shift[ch];
                out[r * c + ch] = !relu || y > 0 || y != y ? y : (T)0;
            }
    }
    return 0;
}

/* dx = ((d − a) − xhat·b)·scale (training: mean not NULL) or d·scale (inference) for channels
 * [ch, ch + nv·NL) of rows [r0, r1); d as in grad_terms. */
INLINE void NAME(backward_apply_tile)(const T *dout, const T *x, const T *inv, const T *shift, const T *mean,
                                      const T *rstd, const T *scale, const T *a, const T *b, int64_t r0, int64_t r1,
                                      int64_t c, int64_t ch, int nv, T *dx)
{
    NORM_NO_CONTRACT
    NVEC iv[TILE], sh[TILE], mu[TILE], rs[TILE], sc[TILE], av[TILE], bv[TILE];
    for (int k = 0; k < nv; k++) {
        const int64_t cc = ch + k * NL;
        iv[k] = sh[k] = mu[k] = (NVEC){0};
        if (inv) {
            NLOAD(iv[k], inv + cc);
            NLOAD(sh[k], shift + cc);
        }
        if (mean)
            NLOAD(mu[k], mean + cc);
        NLOAD(rs[k], rstd + cc);
        NLOAD(sc[k], scale + cc);
        NLOAD(av[k], a + cc);
        NLOAD(bv[k], b + cc);
    }
    for (int64_t r = r0; r < r1; r++)
        for (int k = 0; k < nv; k++) {
            const int64_t at = r * c + ch + k * NL;
            NVEC xv, d;
            NLOAD(xv, x + at);
            NLOAD(d, dout + at);
            if (inv) {
                NVEC f;
                NRELU_FACTOR(f, xv, iv[k], sh[k]);
                d = d * f;
            }
            if (mean == NULL) {
                const NVEC o = d * sc[k];
                NSTORE(dx + at, o);
                continue;
            }
            NVEC xhat = xv - mu[k];
            xhat = xhat * rs[k];
            const NVEC centred = d - av[k], q = xhat * bv[k];
            const NVEC diff = centred - q, o = diff * sc[k];
            NSTORE(dx + at, o);
        }
}

/* dx (rows, c): in training (mean not NULL) ((d − a) − xhat·b)·scale, a = Σd / count, b = Σd·xhat / count,
 * the gradient through the batch statistics; in inference (mean NULL) d·scale. scale = gamma·rstd; d as in
 * bn_backward_sums. */
CLONES int NAME(bn_backward_apply)(const T *dout, const T *x, const T *inv, const T *shift, const T *mean,
                                   const T *rstd, const T *scale, const T *a, const T *b, int64_t rows, int64_t c,
                                   T *dx)
{
    NORM_NO_CONTRACT
    for (int64_t r0 = 0; r0 < rows; r0 += ROW_STEP) {
        const int64_t r1 = r0 + ROW_STEP < rows ? r0 + ROW_STEP : rows;
        int64_t ch = 0;
        for (; ch + TILE * NL <= c; ch += TILE * NL)
            NAME(backward_apply_tile)(dout, x, inv, shift, mean, rstd, scale, a, b, r0, r1, c, ch, TILE, dx);
        for (; ch + NL <= c; ch += NL)
            NAME(backward_apply_tile)(dout, x, inv, shift, mean, rstd, scale, a, b, r0, r1, c, ch, 1, dx);
        for (; ch < c; ch++)
            for (int64_t r = r0; r < r1; r++) {
                const int64_t at = r * c + ch;
                T d = dout[at];
                if (inv)
                    d = d * NAME(relu_factor)(x[at], inv[ch], shift[ch]);
                if (mean == NULL) {
                    dx[at] = d * scale[ch];
                    continue;
                }
                T xhat = x[at] - mean[ch];
                xhat = xhat * rstd[ch];
                const T centred = d - a[ch], q = xhat * b[ch];
                dx[at] = (centred - q) * scale[ch];
            }
    }
    return 0;
}

#undef NVEC
#undef NMASK
#undef NL
#undef TILE
#undef ROW_STEP
#undef INLINE
#undef NLOAD
#undef NSTORE
#undef NKEEP
#undef NRELU_FACTOR
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif
