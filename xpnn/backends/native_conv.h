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
