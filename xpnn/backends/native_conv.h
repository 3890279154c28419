/* The chunked convolution's col2im (xpnn/layers/conv_chunks.py), included by native.c once per type after
 * native_pool.h, whose PoolGeometry and FOR_WINDOWS it shares: a conv's windows are a pool's windows.
 *
 * dx (n, h, w, c) = the columns' gradient dcols (n, out_h, out_w, kh, kw, c) added back over the windows that
 * hold each input cell, in the order of the cell's place in them (kernel row, then column): the order in
 * which the NumPy twin's strided adds (`_add_windows`) reach it, from +0, so the same bits. Each dx cell is
 * written once; the padding's cells, which the twin crops away, are never computed. */

CLONES int NAME(col2im)(const T *dcols, const PoolGeometry *g, T *dx)
{
    const int64_t taps = g->kh * g->kw;
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t y = 0; y < g->h; y++)
            for (int64_t xx = 0; xx < g->w; xx++) {
                T *d = dx + ((b * g->h + y) * g->w + xx) * g->c;
                for (int64_t ch = 0; ch < g->c; ch++)
                    d[ch] = 0;
                FOR_WINDOWS(r, i, y + g->top, g->sh, g->kh, g->out_h)
                FOR_WINDOWS(s, j, xx + g->left, g->sw, g->kw, g->out_w)
                {
                    const T *src = dcols + (((b * g->out_h + i) * g->out_w + j) * taps + r * g->kw + s) * g->c;
                    for (int64_t ch = 0; ch < g->c; ch++)
                        d[ch] += src[ch];
                }
            }
    return 0;
}

/* The chunked conv's ReLU gradient, d = dout · (out > 0) over count values, with the multiply of the NumPy twin's
 * `multiply(dout, out > 0)` (so a NaN or infinite dout where out <= 0 still gives NaN, and -x · 0 gives -0). */
CLONES int NAME(relu_grad)(const T *restrict dout, const T *restrict out, int64_t count, T *restrict d)
{
    for (int64_t i = 0; i < count; i++) { /* dout · 1 is dout: a bitwise select, so that no branch is taken */
        union { T f; LANE_INT i; } g = {dout[i]}, dead = {dout[i] * (T)0}, d_i;
        const LANE_INT keep = -(LANE_INT)(out[i] > 0);
        d_i.i = (g.i & keep) | (dead.i & ~keep);
        d[i] = d_i.f;
    }
    return 0;
}

/* The bias gradient db (c) = Σ over the rows of d (n, c) in order from +0: the order of numpy.sum(axis=0) on a
 * C-contiguous array (one add per row into the running row, from the identity), so the same bits. */
CLONES int NAME(column_sum)(const T *d, int64_t n, int64_t c, T *db)
{
    for (int64_t ch = 0; ch < c; ch++)
        db[ch] = 0;
    for (int64_t p = 0; p < n; p++)
        for (int64_t ch = 0; ch < c; ch++)
            db[ch] += d[p * c + ch];
    return 0;
}
