/* The kernels for one value type; native.c includes this file once per type, after defining T (float or
 * double), LANE_INT (the integer type of T's width) and NAME(base) (base_f32 or base_f64). */

typedef T NAME(vec) __attribute__((vector_size(32)));          /* 8 floats or 4 doubles */
typedef LANE_INT NAME(mask) __attribute__((vector_size(32))); /* comparisons give all-ones lanes */
#define V NAME(vec)
#define VI NAME(mask)
#define LANES ((int64_t)(32 / sizeof(T)))

/* Copy image x (h, w, cin) into the interior of img (hp, wp, cin), whose borders stay zero. */
static void NAME(pad_image)(const T *x, T *img, const Geometry *g)
{
    for (int64_t y = 0; y < g->h; y++)
        memcpy(img + ((y + g->top) * g->wp + g->left) * g->cin, x + y * g->w * g->cin,
               (size_t)(g->w * g->cin) * sizeof(T));
}

/* pooled = each window's max of conv(x, w) (no bias), argmax = its first row-major cell, NaN winning as in
 * numpy.argmax. x (n, h, w, cin); w_lanes (fh, fw, cin, cout) with cout padded by zeros to whole vectors;
 * pooled, argmax (n, out_h, out_w, cout). Returns 0, or -1 when out of memory. */
CLONES static int NAME(forward_generic)(const T *x, const T *w_lanes, const Geometry *g, T *pooled, int64_t *argmax)
{
    const int64_t cl = (g->cout + LANES - 1) / LANES * LANES, taps = g->fw * g->cin, row_len = g->wp * g->cin;
    const int64_t cells = g->ph * g->pw;
    T *img = calloc((size_t)(g->hp * row_len), sizeof(T));
    int64_t *cell_at = window_cells(g);
    if (!img || !cell_at) {
        free(img);
        free(cell_at);
        return -1;
    }
    for (int64_t b = 0; b < g->n; b++) {
        NAME(pad_image)(x + b * g->h * g->w * g->cin, img, g);
        for (int64_t i = 0; i < g->out_h; i++)
            for (int64_t j = 0; j < g->out_w; j++) {
                const T *window = img + i * g->ph * g->sh * row_len + j * g->pw * g->sw * g->cin;
                for (int64_t co = 0; co < cl; co += LANES) {
                    V best = {0};
                    VI arg = {0};
                    for (int64_t k = 0; k < cells; k += CELLS) { /* CELLS window cells at a time, row-major */
                        const int64_t group = cells - k < CELLS ? cells - k : CELLS;
                        const T *patch[CELLS];
                        V acc[CELLS];
                        for (int q = 0; q < CELLS; q++) { /* a short last group repeats its first cell */
                            patch[q] = window + cell_at[k + (q < group ? q : 0)];
                            acc[q] = (V){0};
                        }
                        for (int64_t dy = 0; dy < g->fh; dy++)
                            for (int64_t t = 0; t < taps; t++) { /* one weight vector feeds CELLS multiply-adds */
                                V wv;
                                memcpy(&wv, w_lanes + (dy * taps + t) * cl + co, sizeof wv);
                                for (int q = 0; q < CELLS; q++)
                                    acc[q] += patch[q][dy * row_len + t] * wv;
                            }
                        for (int q = 0; q < group; q++) {
                            if (k + q == 0) {
                                best = acc[0];
                                continue;
                            }
                            VI wins = (acc[q] > best) | ((acc[q] != acc[q]) & (best == best));
                            best = (V)(((VI)acc[q] & wins) | ((VI)best & ~wins));
                            arg = (((VI){0} + (LANE_INT)(k + q)) & wins) | (arg & ~wins);
                        }
                    }
                    const int64_t at = ((b * g->out_h + i) * g->out_w + j) * g->cout + co;
                    for (int64_t lane = 0; lane < LANES && co + lane < g->cout; lane++) {
                        pooled[at + lane] = best[lane];
                        argmax[at + lane] = arg[lane];
                    }
                }
            }
    }
    free(img);
    free(cell_at);
    return 0;
}

/* Each window winner's patch times its gradient, added into dw_t (cout, fh·fw·cin); with dx non-NULL, the
 * gradient times the kernel w_t (cout, fh·fw·cin) added back over the winner's patch, cropped into dx
 * (n, h, w, cin). Channel-major kernels keep each winner's update contiguous. Returns 0, or -1 when out
 * of memory. */
CLONES int NAME(conv_relu_pool_backward)(const T *x, const T *w_t, const Geometry *g, const int64_t *argmax,
                                         const T *grad, T *dw_t, T *dx)
{
    const int64_t taps = g->fw * g->cin, k_len = g->fh * taps, row_len = g->wp * g->cin;
    const int64_t wide = (taps + LANES - 1) / LANES * LANES; /* a kernel row in whole vectors */
    const size_t img_len = (size_t)(g->hp * row_len);
    T *img = calloc(img_len + (size_t)LANES, sizeof(T)); /* slack: a patch row's last vector may read past */
    T *dimg = dx ? malloc(img_len * sizeof(T)) : NULL;
    T *dw_wide = calloc((size_t)(g->cout * g->fh * wide), sizeof(T)); /* dW rows padded to whole vectors */
    int64_t *cell_at = window_cells(g);
    if (!img || (dx && !dimg) || !dw_wide || !cell_at) {
        free(img);
        free(dimg);
        free(dw_wide);
        free(cell_at);
        return -1;
    }
    for (int64_t b = 0; b < g->n; b++) {
        NAME(pad_image)(x + b * g->h * g->w * g->cin, img, g);
        if (dimg)
            memset(dimg, 0, img_len * sizeof(T));
        for (int64_t i = 0; i < g->out_h; i++)
            for (int64_t j = 0; j < g->out_w; j++)
                for (int64_t co = 0; co < g->cout; co++) {
                    const int64_t at = ((b * g->out_h + i) * g->out_w + j) * g->cout + co;
                    const T gv = grad[at];
                    if (gv == 0) /* a dead ReLU or a zero gradient adds nothing */
                        continue;
                    const int64_t corner =
                        i * g->ph * g->sh * row_len + j * g->pw * g->sw * g->cin + cell_at[argmax[at]];
                    for (int64_t dy = 0; dy < g->fh; dy++) {
                        const T *patch = img + corner + dy * row_len;
                        T *dw_row = dw_wide + (co * g->fh + dy) * wide;
                        for (int64_t t = 0; t < wide; t += LANES) { /* lanes past the row land in the padding */
                            V p, d;
                            memcpy(&p, patch + t, sizeof p);
                            memcpy(&d, dw_row + t, sizeof d);
                            d += gv * p;
                            memcpy(dw_row + t, &d, sizeof d);
                        }
                        if (dimg) {
                            T *dpatch = dimg + corner + dy * row_len;
                            const T *w_row = w_t + co * k_len + dy * taps;
                            for (int64_t t = 0; t < taps; t++)
                                dpatch[t] += gv * w_row[t];
                        }
                    }
                }
        if (dimg)
            for (int64_t y = 0; y < g->h; y++)
                memcpy(dx + (b * g->h + y) * g->w * g->cin, dimg + ((y + g->top) * g->wp + g->left) * g->cin,
                       (size_t)(g->w * g->cin) * sizeof(T));
    }
    for (int64_t co = 0; co < g->cout; co++)
        for (int64_t dy = 0; dy < g->fh; dy++)
            for (int64_t t = 0; t < taps; t++)
                dw_t[co * k_len + dy * taps + t] += dw_wide[(co * g->fh + dy) * wide + t];
    free(img);
    free(dimg);
    free(dw_wide);
    free(cell_at);
    return 0;
}

#undef T
#undef LANE_INT
#undef NAME
#undef V
#undef VI
#undef LANES
