/* Max and average pooling on NHWC images, any window, stride and TF padding (included by native.c once per
 * type, like native_kernels.h). The NumPy twins are maxpool_* / avgpool_* in xpnn/layers/pool.py; these loops
 * give their bits:
 * - max: each window's first maximum in row-major order, a NaN beating any number (numpy.argmax over the
 *   window padded with -inf: a padded cell wins only a window whose real cells are all -inf, at cell 0);
 * - average: the window's real cells summed in row-major order, divided by their count;
 * - both backwards gather, for each input cell, the windows that hold it in the order (window row, window
 *   column) of the cell's place in them, the order in which the twin's windows_add adds its patches.
 * Channels are the inner loop, contiguous in every array; the compiler vectorises them. */

#ifndef POOL_CHANNELS
#define POOL_CHANNELS 256 /* channels per pass, so that the running maxima and winners stay on the stack */

/* The windows that hold an input cell, in the order of its place in them (row-major): along one axis, the
 * cell at padded position q sits at offset q % stride of window q / stride, at offset + stride of the window
 * before, and so on while the offset is inside the window. */
#define FOR_WINDOWS(offset, window, q, stride, k, count)                                                   \
    for (int64_t offset = (q) % (stride), window = (q) / (stride); offset < (k) && window >= 0;             \
         offset += (stride), window--)                                                                      \
        if (window < (count))
#endif

/* out (n, out_h, out_w, c): each window's max; argmax: its first row-major cell (see above). */
CLONES int NAME(max_pool_forward)(const T *x, const PoolGeometry *g, T *out, int64_t *argmax)
{
    T best[POOL_CHANNELS], arg[POOL_CHANNELS]; /* the winning cell as a T (exact below 2^24): one vector type */
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t i = 0; i < g->out_h; i++)
            for (int64_t j = 0; j < g->out_w; j++)
                for (int64_t c0 = 0; c0 < g->c; c0 += POOL_CHANNELS) {
                    const int64_t cs = g->c - c0 < POOL_CHANNELS ? g->c - c0 : POOL_CHANNELS;
                    for (int64_t ch = 0; ch < cs; ch++) {
                        best[ch] = -(T)INFINITY; /* where cell 0 is padding, it holds -inf and wins at first */
                        arg[ch] = 0;
                    }
                    for (int64_t r = 0; r < g->kh; r++) {
                        const int64_t y = i * g->sh + r - g->top;
                        if (y < 0 || y >= g->h)
                            continue; /* padding: -inf never beats the running max */
                        for (int64_t s = 0; s < g->kw; s++) {
                            const int64_t xx = j * g->sw + s - g->left;
                            if (xx < 0 || xx >= g->w)
                                continue;
                            const T *row = x + ((b * g->h + y) * g->w + xx) * g->c + c0;
                            const T cell = (T)(r * g->kw + s);
                            for (int64_t ch = 0; ch < cs; ch++) {
                                const T v = row[ch], m = best[ch];
                                const int wins = (v > m) | ((v != v) & (m == m));
                                best[ch] = wins ? v : m;
                                arg[ch] = wins ? cell : arg[ch];
                            }
                        }
                    }
                    const int64_t at = ((b * g->out_h + i) * g->out_w + j) * g->c + c0;
                    for (int64_t ch = 0; ch < cs; ch++) {
                        out[at + ch] = best[ch];
                        argmax[at + ch] = (int64_t)arg[ch];
                    }
                }
    return 0;
}

/* dx (n, h, w, c) = each input cell's sum of the gradients of the windows it won, in the twin's order. */
CLONES int NAME(max_pool_backward)(const T *dout, const int64_t *argmax, const PoolGeometry *g, T *dx)
{
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t y = 0; y < g->h; y++)
            for (int64_t xx = 0; xx < g->w; xx++) {
                T *d = dx + ((b * g->h + y) * g->w + xx) * g->c;
                for (int64_t ch = 0; ch < g->c; ch++)
                    d[ch] = 0;
                FOR_WINDOWS(r, i, y + g->top, g->sh, g->kh, g->out_h)
                FOR_WINDOWS(s, j, xx + g->left, g->sw, g->kw, g->out_w)
                {
                    const int64_t at = ((b * g->out_h + i) * g->out_w + j) * g->c, cell = r * g->kw + s;
                    const int64_t *a = argmax + at;
                    const T *gv = dout + at;
                    for (int64_t ch = 0; ch < g->c; ch++)
                        d[ch] += a[ch] == cell ? gv[ch] : (T)0;
                }
            }
    return 0;
}

/* out (n, out_h, out_w, c): each window's real cells summed in row-major order from +0 (as numpy.sum starts
 * from its identity; the twin's padded cells add +0 and change nothing), divided by counts (out_h, out_w). */
CLONES int NAME(avg_pool_forward)(const T *x, const T *counts, const PoolGeometry *g, T *out)
{
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t i = 0; i < g->out_h; i++)
            for (int64_t j = 0; j < g->out_w; j++) {
                T *o = out + ((b * g->out_h + i) * g->out_w + j) * g->c;
                const T count = counts[i * g->out_w + j];
                for (int64_t ch = 0; ch < g->c; ch++)
                    o[ch] = 0;
                for (int64_t r = 0; r < g->kh; r++) {
                    const int64_t y = i * g->sh + r - g->top;
                    if (y < 0 || y >= g->h)
                        continue;
                    for (int64_t s = 0; s < g->kw; s++) {
                        const int64_t xx = j * g->sw + s - g->left;
                        if (xx < 0 || xx >= g->w)
                            continue;
                        const T *row = x + ((b * g->h + y) * g->w + xx) * g->c;
                        for (int64_t ch = 0; ch < g->c; ch++)
                            o[ch] += row[ch];
                    }
                }
                for (int64_t ch = 0; ch < g->c; ch++)
                    o[ch] /= count;
            }
    return 0;
}

/* dx (n, h, w, c) = each input cell's sum of dout / count over the windows that hold it, in the twin's order. */
CLONES int NAME(avg_pool_backward)(const T *dout, const T *counts, const PoolGeometry *g, T *dx)
{
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t y = 0; y < g->h; y++)
            for (int64_t xx = 0; xx < g->w; xx++) {
                T *d = dx + ((b * g->h + y) * g->w + xx) * g->c;
                for (int64_t ch = 0; ch < g->c; ch++)
                    d[ch] = 0;
                FOR_WINDOWS(r, i, y + g->top, g->sh, g->kh, g->out_h)
                FOR_WINDOWS(s, j, xx + g->left, g->sw, g->kw, g->out_w)
                {
                    const T count = counts[i * g->out_w + j];
                    const T *gv = dout + ((b * g->out_h + i) * g->out_w + j) * g->c;
                    for (int64_t ch = 0; ch < g->c; ch++)
                        d[ch] += gv[ch] / count;
                }
            }
    return 0;
}
