/* float32 convolution on AVX-512 without the im2col copy (implicit GEMM), for xpnn/layers/conv_chunks.py;
 * included by native.c after native_gemm.h, whose register blocks these follow.
 *
 * The chunked conv multiplies the im2col columns of a padded chunk, cols (m·out_h·out_w, fh·fw·cin), by the
 * kernel w (fh·fw·cin, cout). Column t = (i·fw + j)·cin + c of output pixel p is the padded input at p's window
 * corner + i·wp·cin + j·cin + c, so for each kernel row i the fw·cin values of a window row are one contiguous
 * run of the NHWC input, and the pixels of one output row are stride·cin floats apart. These kernels read that
 * run in place, in the GEMM's order t = 0, 1, ... with the same fused multiply-adds from +0: every value is
 * the bits native_gemm.h gives on the copied columns (tests/test_conv_implicit.py checks it).
 *
 * conv_forward: out (m, out_h, out_w, cout) = cols · w (+ bias, · scale + shift, then max(·, 0) with `relu`: the
 * ConvEpilogue), the epilogue in registers before the store, as the NumPy path's `out += b`, an inference
 * BatchNormalization's `out *= inv; out += shift` and `maximum(out, 0.0)` round (one rounding per step, a max
 * that keeps NaN). Register blocks of R pixels of one output row × V 16-lane vectors of cout; a row of
 * out_w pixels is split into ceil(out_w / R_max) blocks of near-equal size, so short rows keep wide blocks.
 *
 * conv_weight_grad: dwt (cout, fh·fw·cin) = gᵀ · cols, g (m·out_h·out_w, cout) the output gradient, each value
 * one sum over the chunk's pixels in order (the transposed product native_gemm.h runs on the columns). Needs
 * fw·cin a multiple of 16, so no 16-lane vector of a column row straddles two kernel rows.
 *
 * conv_weight_grad_taps (below) the same sums as dw (fh·fw·cin, cout) for any fw·cin, and conv_input_grad dx
 * without the columns' gradient or col2im.
 *
 * Measured on the AMD EPYC (Zen 5) VM of docs/benchmarks.md, one core, kernels alone: forward 196 GFLOP/s on
 * RGB 3x3 (K = 27) and 235-260 on 32/64-channel 3x3 and 5x5 convs; dW 236-244; dx 176 (3x3 stride 2 on 16x16)
 * to 255. The im2col GEMM reaches ~247 on its product but also copies the columns (and col2im adds them back):
 * end to end AlexNet-style conv(32, 5) on RGB 7.0 -> 3.0 ms, conv(64, 5) 17.9 -> 13.7 ms (batch 128). */

struct ConvGeometry {
    int64_t m, hp, wp, cin; /* the padded chunk */
    int64_t fh, fw, sh, sw; /* kernel and strides */
    int64_t out_h, out_w, cout;
};

/* What the forward does to each sum before the store, in this order, each step rounded on its own as the layers'
 * NumPy passes round: + bias (Conv2D), · scale + shift (an inference BatchNormalization: x·inv + shift), then
 * max(0, ·) with relu. NULL pointers skip their step; the vectors hold ldw floats (cout, then zeros). */
struct ConvEpilogue {
    const float *bias, *scale, *shift;
    int relu;
};

#pragma GCC push_options
#pragma GCC optimize("-ffp-contract=off") /* the epilogue's multiply and add stay two roundings */
/* R pixels, the first at x (its window's corner), the next `step` floats on; c = R rows of ldc floats. */
#define IGEMM_BLOCK(R, V)                                                                                    \
    __attribute__((target("avx512f"))) static void igemm_block_##R##_##V(                                     \
        const float *x, int64_t step, int64_t row, int64_t run, int64_t fh, const float *w, int64_t ldw,       \
        const struct ConvEpilogue *e, float *c, int64_t ldc, __mmask16 last)                                  \
    {                                                                                                         \
        __m512 acc[R][V];                                                                                     \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < V; v++)                                                                       \
                acc[r][v] = _mm512_setzero_ps();                                                              \
        for (int64_t i = 0; i < fh; i++) {                                                                    \
            const float *xi = x + i * row;                                                                    \
            for (int64_t t = 0; t < run; t++, w += ldw) {                                                     \
                __m512 bv[V];                                                                                 \
                for (int v = 0; v < V; v++)                                                                   \
                    bv[v] = _mm512_loadu_ps(w + 16 * v);                                                      \
                for (int r = 0; r < R; r++) {                                                                 \
                    const __m512 av = _mm512_set1_ps(xi[r * step + t]);                                       \
                    for (int v = 0; v < V; v++)                                                               \
                        acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                                    \
                }                                                                                             \
            }                                                                                                 \
        }                                                                                                     \
        const __m512 zero = _mm512_setzero_ps();                                                              \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < V; v++) {                                                                     \
                const __mmask16 lanes = v < V - 1 ? (__mmask16)0xFFFF : last;                                 \
                __m512 y = acc[r][v];                                                                         \
                if (e->bias)                                                                                  \
                    y = _mm512_add_ps(y, _mm512_loadu_ps(e->bias + 16 * v));                                  \
                if (e->scale) { /* two roundings, never one fused multiply-add (contraction is off here) */  \
                    y = _mm512_mul_ps(y, _mm512_loadu_ps(e->scale + 16 * v));                                 \
                    y = _mm512_add_ps(y, _mm512_loadu_ps(e->shift + 16 * v));                                 \
                }                                                                                             \
                if (e->relu) /* max(0, y) returns y when y is NaN, as numpy.maximum does */                  \
                    y = _mm512_max_ps(zero, y);                                                               \
                _mm512_mask_storeu_ps(c + r * ldc + 16 * v, lanes, y);                                        \
            }                                                                                                 \
    }

typedef void (*IgemmBlock)(const float *, int64_t, int64_t, int64_t, int64_t, const float *, int64_t,
                           const struct ConvEpilogue *, float *, int64_t, __mmask16);

IGEMM_BLOCK(1, 4) IGEMM_BLOCK(2, 4) IGEMM_BLOCK(3, 4) IGEMM_BLOCK(4, 4) IGEMM_BLOCK(5, 4) IGEMM_BLOCK(6, 4)
IGEMM_BLOCK(1, 2) IGEMM_BLOCK(2, 2) IGEMM_BLOCK(3, 2) IGEMM_BLOCK(4, 2) IGEMM_BLOCK(5, 2) IGEMM_BLOCK(6, 2)
IGEMM_BLOCK(7, 2) IGEMM_BLOCK(8, 2) IGEMM_BLOCK(9, 2) IGEMM_BLOCK(10, 2) IGEMM_BLOCK(11, 2) IGEMM_BLOCK(12, 2)
IGEMM_BLOCK(1, 1) IGEMM_BLOCK(2, 1) IGEMM_BLOCK(3, 1) IGEMM_BLOCK(4, 1) IGEMM_BLOCK(5, 1) IGEMM_BLOCK(6, 1)
IGEMM_BLOCK(7, 1) IGEMM_BLOCK(8, 1) IGEMM_BLOCK(9, 1) IGEMM_BLOCK(10, 1) IGEMM_BLOCK(11, 1) IGEMM_BLOCK(12, 1)
#pragma GCC pop_options

/* blocks[V][R - 1]: 64 columns take up to 6 pixels (24 accumulators), 32 and 16 columns up to 12. */
static const IgemmBlock igemm_blocks_4[6] = {igemm_block_1_4, igemm_block_2_4, igemm_block_3_4,
                                             igemm_block_4_4, igemm_block_5_4, igemm_block_6_4};
static const IgemmBlock igemm_blocks_2[12] = {igemm_block_1_2, igemm_block_2_2,  igemm_block_3_2,  igemm_block_4_2,
                                              igemm_block_5_2, igemm_block_6_2,  igemm_block_7_2,  igemm_block_8_2,
                                              igemm_block_9_2, igemm_block_10_2, igemm_block_11_2, igemm_block_12_2};
static const IgemmBlock igemm_blocks_1[12] = {igemm_block_1_1, igemm_block_2_1,  igemm_block_3_1,  igemm_block_4_1,
                                              igemm_block_5_1, igemm_block_6_1,  igemm_block_7_1,  igemm_block_8_1,
                                              igemm_block_9_1, igemm_block_10_1, igemm_block_11_1, igemm_block_12_1};

/* One panel of `width` (64, 32 or 16) output channels from channel j, over every output pixel of the chunk; its
 * last vector's lanes past cout (a cout that is not a multiple of 16) are computed from w's zero padding and
 * never stored. w rows are ldw floats apart. */
static void igemm_panel(const float *x, const struct ConvGeometry *g, const float *w, int64_t ldw,
                        const struct ConvEpilogue *epilogue, float *out, int64_t j, int64_t width)
{
    const struct ConvEpilogue e = {epilogue->bias ? epilogue->bias + j : NULL,
                                   epilogue->scale ? epilogue->scale + j : NULL,
                                   epilogue->shift ? epilogue->shift + j : NULL, epilogue->relu};
    const int64_t tail = g->cout - (j + width - 16); /* lanes of the last vector inside cout: 16 but at the end */
    const __mmask16 last = tail >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << tail) - 1);
    const IgemmBlock *blocks = width == 64 ? igemm_blocks_4 : width == 32 ? igemm_blocks_2 : igemm_blocks_1;
    const int64_t r_max = width == 64 ? 6 : 12;
    const int64_t nblocks = (g->out_w + r_max - 1) / r_max;
    const int64_t row = g->wp * g->cin, run = g->fw * g->cin, step = g->sw * g->cin;
    for (int64_t b = 0; b < g->m; b++)
        for (int64_t oy = 0; oy < g->out_h; oy++) {
            const float *xrow = x + (b * g->hp + oy * g->sh) * row;
            float *orow = out + ((b * g->out_h + oy) * g->out_w) * g->cout + j;
            int64_t ox = 0;
            for (int64_t k = 0; k < nblocks; k++) { /* sizes differ by at most one, larger first */
                const int64_t r = g->out_w / nblocks + (k < g->out_w % nblocks);
                blocks[r - 1](xrow + ox * step, step, row, run, g->fh, w + j, ldw, &e, orow + ox * g->cout, g->cout,
                              last);
                ox += r;
            }
        }
}

/* The next panel's width at channel j of cout: 64 while that many remain, then 32 and 16 (the last one may
 * reach past cout by up to 15 lanes, masked). */
static int64_t panel_width(int64_t j, int64_t cout)
{
    const int64_t left = cout - j;
    return left >= 64 ? 64 : left > 16 ? 32 : 16;
}

/* out = conv(x, w), then the epilogue e, as above, any cout: w (fh·fw·cin, ldw) and e's vectors (ldw) hold cout
 * channels and zeros up to ldw, a multiple of 16; returns 0, or -1 (nothing written) when the CPU lacks AVX-512F
 * or ldw is not a multiple of 16 at least cout. */
static int conv_forward_avx512(const float *x, const struct ConvGeometry *g, const float *w, int64_t ldw,
                               const struct ConvEpilogue *e, float *out)
{
    if (!gemm_takes() || ldw % 16 != 0 || ldw < g->cout)
        return -1;
    for (int64_t j = 0; j < g->cout;) {
        const int64_t width = panel_width(j, g->cout);
        igemm_panel(x, g, w, ldw, e, out, j, width);
        j += width;
    }
    return 0;
}

/* dwt rows c0 .. c0+R-1, columns j .. j+16V-1 (vector v at x offset off[v] in a window) = Σ over the chunk's
 * pixels, in order, of g[p][c] · cols[p][t]; g rows are cout floats apart. */
#define IGEMM_DW_BLOCK(R, V)                                                                                 \
    __attribute__((target("avx512f"))) static void igemm_dw_block_##R##_##V(                                  \
        const float *x, const struct ConvGeometry *g, const int64_t *off, const float *gr, float *c, int64_t ldc)     \
    {                                                                                                         \
        __m512 acc[R][V];                                                                                     \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < V; v++)                                                                       \
                acc[r][v] = _mm512_setzero_ps();                                                              \
        const int64_t row = g->wp * g->cin, step = g->sw * g->cin;                                            \
        int64_t o[V];                                                                                         \
        for (int v = 0; v < V; v++)                                                                           \
            o[v] = off[v];                                                                                    \
        for (int64_t b = 0; b < g->m; b++)                                                                    \
            for (int64_t oy = 0; oy < g->out_h; oy++) {                                                       \
                const float *px = x + (b * g->hp + oy * g->sh) * row;                                         \
                for (int64_t ox = 0; ox < g->out_w; ox++, px += step, gr += g->cout) {                        \
                    __m512 bv[V];                                                                             \
                    for (int v = 0; v < V; v++)                                                               \
                        bv[v] = _mm512_loadu_ps(px + o[v]);                                                   \
                    for (int r = 0; r < R; r++) {                                                             \
                        const __m512 av = _mm512_set1_ps(gr[r]);                                              \
                        for (int v = 0; v < V; v++)                                                           \
                            acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                                \
                    }                                                                                         \
                }                                                                                             \
            }                                                                                                 \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < V; v++)                                                                       \
                _mm512_storeu_ps(c + r * ldc + 16 * v, acc[r][v]);                                            \
    }

IGEMM_DW_BLOCK(1, 4) IGEMM_DW_BLOCK(2, 4) IGEMM_DW_BLOCK(3, 4) IGEMM_DW_BLOCK(4, 4) IGEMM_DW_BLOCK(5, 4)
IGEMM_DW_BLOCK(6, 4) IGEMM_DW_BLOCK(1, 2) IGEMM_DW_BLOCK(2, 2) IGEMM_DW_BLOCK(3, 2) IGEMM_DW_BLOCK(4, 2)
IGEMM_DW_BLOCK(5, 2) IGEMM_DW_BLOCK(6, 2) IGEMM_DW_BLOCK(7, 2) IGEMM_DW_BLOCK(8, 2) IGEMM_DW_BLOCK(9, 2)
IGEMM_DW_BLOCK(10, 2) IGEMM_DW_BLOCK(11, 2) IGEMM_DW_BLOCK(12, 2) IGEMM_DW_BLOCK(1, 1) IGEMM_DW_BLOCK(2, 1)
IGEMM_DW_BLOCK(3, 1) IGEMM_DW_BLOCK(4, 1) IGEMM_DW_BLOCK(5, 1) IGEMM_DW_BLOCK(6, 1) IGEMM_DW_BLOCK(7, 1)
IGEMM_DW_BLOCK(8, 1) IGEMM_DW_BLOCK(9, 1) IGEMM_DW_BLOCK(10, 1) IGEMM_DW_BLOCK(11, 1) IGEMM_DW_BLOCK(12, 1)

typedef void (*IgemmDwBlock)(const float *, const struct ConvGeometry *, const int64_t *, const float *, float *,
                             int64_t);
static const IgemmDwBlock igemm_dw_blocks_4[6] = {igemm_dw_block_1_4, igemm_dw_block_2_4, igemm_dw_block_3_4,
                                                  igemm_dw_block_4_4, igemm_dw_block_5_4, igemm_dw_block_6_4};
static const IgemmDwBlock igemm_dw_blocks_2[12] = {
    igemm_dw_block_1_2, igemm_dw_block_2_2, igemm_dw_block_3_2,  igemm_dw_block_4_2,  igemm_dw_block_5_2,  igemm_dw_block_6_2,
    igemm_dw_block_7_2, igemm_dw_block_8_2, igemm_dw_block_9_2, igemm_dw_block_10_2, igemm_dw_block_11_2, igemm_dw_block_12_2};
static const IgemmDwBlock igemm_dw_blocks_1[12] = {
    igemm_dw_block_1_1, igemm_dw_block_2_1, igemm_dw_block_3_1,  igemm_dw_block_4_1,  igemm_dw_block_5_1,  igemm_dw_block_6_1,
    igemm_dw_block_7_1, igemm_dw_block_8_1, igemm_dw_block_9_1, igemm_dw_block_10_1, igemm_dw_block_11_1, igemm_dw_block_12_1};

/* dwt (cout, fh·fw·cin) = gᵀ · cols as above, in panels of 64, 32 and 16 columns, each split over the output
 * channels into blocks of near-equal size; returns 0, or -1 (nothing written) when the CPU lacks AVX-512F or
 * fw·cin is not a multiple of 16. */
static int conv_weight_grad_avx512(const float *x, const struct ConvGeometry *g, const float *grad, float *dwt)
{
    const int64_t run = g->fw * g->cin, k = g->fh * run, row = g->wp * g->cin;
    if (!gemm_takes() || run % 16 != 0)
        return -1;
    for (int64_t j = 0; j < k;) {
        const int64_t width = k - j >= 64 ? 64 : k - j >= 32 ? 32 : 16;
        const IgemmDwBlock *blocks = width == 64 ? igemm_dw_blocks_4 : width == 32 ? igemm_dw_blocks_2 : igemm_dw_blocks_1;
        const int64_t r_max = width == 64 ? 6 : 12, nblocks = (g->cout + r_max - 1) / r_max;
        int64_t off[4];
        for (int v = 0; v < width / 16; v++) { /* column j + 16v: kernel row (j + 16v) / run, then its place */
            const int64_t t = j + 16 * v;
            off[v] = t / run * row + t % run;
        }
        for (int64_t b = 0, i = 0; b < nblocks; b++) {
            const int64_t r = g->cout / nblocks + (b < g->cout % nblocks);
            blocks[r - 1](x, g, off, grad + i, dwt + i * k + j, k);
            i += r;
        }
        j += width;
    }
    return 0;
}

/* conv_weight_grad_taps: dw (fh·fw·cin, cout) = colsᵀ · g, for kernels whose window rows (fw·cin, e.g. 15 for a
 * 5x5 kernel on RGB) are not whole vectors: a block is R consecutive taps of one window row (broadcast from the
 * input, one displacement apart) × V 16-lane vectors of the output gradient's channels, summed over the chunk's
 * pixels in order from +0 (the bits of native_gemm.h's product on the copied columns' transpose). */
#define IGEMM_DWT_BLOCK(R, V)                                                                                \
    __attribute__((target("avx512f"))) static void igemm_dwt_block_##R##_##V(                                 \
        const float *x, const struct ConvGeometry *g, const float *gr, float *c)                              \
    {                                                                                                         \
        __m512 acc[R][V];                                                                                     \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < V; v++)                                                                       \
                acc[r][v] = _mm512_setzero_ps();                                                              \
        const int64_t row = g->wp * g->cin, step = g->sw * g->cin;                                            \
        for (int64_t b = 0; b < g->m; b++)                                                                    \
            for (int64_t oy = 0; oy < g->out_h; oy++) {                                                       \
                const float *px = x + (b * g->hp + oy * g->sh) * row;                                         \
                for (int64_t ox = 0; ox < g->out_w; ox++, px += step, gr += g->cout) {                        \
                    __m512 bv[V];                                                                             \
                    for (int v = 0; v < V; v++)                                                               \
                        bv[v] = _mm512_loadu_ps(gr + 16 * v);                                                 \
                    for (int r = 0; r < R; r++) {                                                             \
                        const __m512 av = _mm512_set1_ps(px[r]);                                              \
                        for (int v = 0; v < V; v++)                                                           \
                            acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                                \
                    }                                                                                         \
                }                                                                                             \
            }                                                                                                 \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < V; v++)                                                                       \
                _mm512_storeu_ps(c + r * g->cout + 16 * v, acc[r][v]);                                        \
    }

IGEMM_DWT_BLOCK(1, 4) IGEMM_DWT_BLOCK(2, 4) IGEMM_DWT_BLOCK(3, 4) IGEMM_DWT_BLOCK(4, 4) IGEMM_DWT_BLOCK(5, 4)
IGEMM_DWT_BLOCK(6, 4) IGEMM_DWT_BLOCK(1, 2) IGEMM_DWT_BLOCK(2, 2) IGEMM_DWT_BLOCK(3, 2) IGEMM_DWT_BLOCK(4, 2)
IGEMM_DWT_BLOCK(5, 2) IGEMM_DWT_BLOCK(6, 2) IGEMM_DWT_BLOCK(7, 2) IGEMM_DWT_BLOCK(8, 2) IGEMM_DWT_BLOCK(9, 2)
IGEMM_DWT_BLOCK(10, 2) IGEMM_DWT_BLOCK(11, 2) IGEMM_DWT_BLOCK(12, 2) IGEMM_DWT_BLOCK(1, 1) IGEMM_DWT_BLOCK(2, 1)
IGEMM_DWT_BLOCK(3, 1) IGEMM_DWT_BLOCK(4, 1) IGEMM_DWT_BLOCK(5, 1) IGEMM_DWT_BLOCK(6, 1) IGEMM_DWT_BLOCK(7, 1)
IGEMM_DWT_BLOCK(8, 1) IGEMM_DWT_BLOCK(9, 1) IGEMM_DWT_BLOCK(10, 1) IGEMM_DWT_BLOCK(11, 1) IGEMM_DWT_BLOCK(12, 1)

typedef void (*IgemmDwtBlock)(const float *, const struct ConvGeometry *, const float *, float *);
static const IgemmDwtBlock igemm_dwt_blocks_4[6] = {igemm_dwt_block_1_4, igemm_dwt_block_2_4, igemm_dwt_block_3_4,
                                                    igemm_dwt_block_4_4, igemm_dwt_block_5_4, igemm_dwt_block_6_4};
static const IgemmDwtBlock igemm_dwt_blocks_2[12] = {
    igemm_dwt_block_1_2,  igemm_dwt_block_2_2,  igemm_dwt_block_3_2, igemm_dwt_block_4_2,
    igemm_dwt_block_5_2,  igemm_dwt_block_6_2,  igemm_dwt_block_7_2, igemm_dwt_block_8_2,
    igemm_dwt_block_9_2,  igemm_dwt_block_10_2, igemm_dwt_block_11_2, igemm_dwt_block_12_2};
static const IgemmDwtBlock igemm_dwt_blocks_1[12] = {
    igemm_dwt_block_1_1,  igemm_dwt_block_2_1,  igemm_dwt_block_3_1, igemm_dwt_block_4_1,
    igemm_dwt_block_5_1,  igemm_dwt_block_6_1,  igemm_dwt_block_7_1, igemm_dwt_block_8_1,
    igemm_dwt_block_9_1,  igemm_dwt_block_10_1, igemm_dwt_block_11_1, igemm_dwt_block_12_1};

/* dw (fh·fw·cin, cout) = colsᵀ · g as above; returns 0, or -1 (nothing written) when the CPU lacks AVX-512F or
 * cout is not a multiple of 16 (the caller pads g's rows and dw with zero channels: the same sums). */
static int conv_weight_grad_taps_avx512(const float *x, const struct ConvGeometry *g, const float *grad, float *dw)
{
    const int64_t run = g->fw * g->cin, row = g->wp * g->cin;
    if (!gemm_takes() || g->cout % 16 != 0)
        return -1;
    for (int64_t j = 0; j < g->cout;) {
        const int64_t width = panel_width(j, g->cout);
        const IgemmDwtBlock *blocks = width == 64 ? igemm_dwt_blocks_4 : width == 32 ? igemm_dwt_blocks_2 : igemm_dwt_blocks_1;
        const int64_t r_max = width == 64 ? 6 : 12, nblocks = (run + r_max - 1) / r_max;
        for (int64_t i = 0; i < g->fh; i++)
            for (int64_t b = 0, t = 0; b < nblocks; b++) { /* taps t .. t + r - 1 of window row i */
                const int64_t r = run / nblocks + (b < run % nblocks);
                blocks[r - 1](x + i * row + t, g, grad + j, dw + (i * run + t) * g->cout + j);
                t += r;
            }
        j += width;
    }
    return 0;
}

/* conv_input_grad: dx (m, h, w, cin) = the columns' gradient grad · wt (wt = wᵀ, (cout, fh·fw·cin)) added back
 * over the windows, as native_gemm.h's product and native_conv.h's col2im give it: each tap's value is one sum
 * over the output channels in order from +0, and each dx cell adds its taps from +0 in the order FOR_WINDOWS
 * reaches them (kernel row, then column), never writing the columns. Needs cin a multiple of 16. A block is R
 * dx pixels of one row, sw apart (so that each tap's windows are R consecutive output pixels) × V vectors of
 * channels; dx is the accumulator, read and written once per tap. */
#define IDX_BLOCK(R, V)                                                                                      \
    __attribute__((target("avx512f"))) static void idx_block_##R##_##V(                                       \
        const float *gp, int64_t cout, const float *wt, int64_t ldw, float *d, int64_t dstep)                 \
    {                                                                                                         \
        __m512 acc[R][V];                                                                                     \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < V; v++)                                                                       \
                acc[r][v] = _mm512_setzero_ps();                                                              \
        for (int64_t c = 0; c < cout; c++, wt += ldw) {                                                       \
            __m512 bv[V];                                                                                     \
            for (int v = 0; v < V; v++)                                                                       \
                bv[v] = _mm512_loadu_ps(wt + 16 * v);                                                         \
            for (int r = 0; r < R; r++) {                                                                     \
                const __m512 av = _mm512_set1_ps(gp[r * cout + c]);                                           \
                for (int v = 0; v < V; v++)                                                                   \
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                                        \
            }                                                                                                 \
        }                                                                                                     \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < V; v++)                                                                       \
                _mm512_storeu_ps(d + r * dstep + 16 * v,                                                      \
                                 _mm512_add_ps(_mm512_loadu_ps(d + r * dstep + 16 * v), acc[r][v]));          \
    }

typedef void (*IdxBlock)(const float *, int64_t, const float *, int64_t, float *, int64_t);

IDX_BLOCK(1, 4) IDX_BLOCK(2, 4) IDX_BLOCK(3, 4) IDX_BLOCK(4, 4) IDX_BLOCK(5, 4) IDX_BLOCK(6, 4)
IDX_BLOCK(1, 2) IDX_BLOCK(2, 2) IDX_BLOCK(3, 2) IDX_BLOCK(4, 2) IDX_BLOCK(5, 2) IDX_BLOCK(6, 2)
IDX_BLOCK(7, 2) IDX_BLOCK(8, 2) IDX_BLOCK(9, 2) IDX_BLOCK(10, 2) IDX_BLOCK(11, 2) IDX_BLOCK(12, 2)
IDX_BLOCK(1, 1) IDX_BLOCK(2, 1) IDX_BLOCK(3, 1) IDX_BLOCK(4, 1) IDX_BLOCK(5, 1) IDX_BLOCK(6, 1)
IDX_BLOCK(7, 1) IDX_BLOCK(8, 1) IDX_BLOCK(9, 1) IDX_BLOCK(10, 1) IDX_BLOCK(11, 1) IDX_BLOCK(12, 1)

static const IdxBlock idx_blocks_4[6] = {idx_block_1_4, idx_block_2_4, idx_block_3_4,
                                         idx_block_4_4, idx_block_5_4, idx_block_6_4};
static const IdxBlock idx_blocks_2[12] = {idx_block_1_2, idx_block_2_2,  idx_block_3_2,  idx_block_4_2,
                                          idx_block_5_2, idx_block_6_2,  idx_block_7_2,  idx_block_8_2,
                                          idx_block_9_2, idx_block_10_2, idx_block_11_2, idx_block_12_2};
static const IdxBlock idx_blocks_1[12] = {idx_block_1_1, idx_block_2_1,  idx_block_3_1,  idx_block_4_1,
                                          idx_block_5_1, idx_block_6_1,  idx_block_7_1,  idx_block_8_1,
                                          idx_block_9_1, idx_block_10_1, idx_block_11_1, idx_block_12_1};

/* Row y of image b (`row`: w pixels of c floats, zeroed by the caller), channels ch .. ch + width - 1: each tap
 * (r, s) in FOR_WINDOWS order (kernel row, then column) added to the pixels at column s of a window,
 * x = j·sw + s − left for consecutive windows j, in blocks of at most r_max; so each pixel adds its taps in
 * col2im's order, and the blocks of one tap reuse its weights from L1. */
static void idx_row(const float *grad, const float *wt, const PoolGeometry *g, int64_t cout, float *row, int64_t b,
                    int64_t y, int64_t ch, int64_t width)
{
    const IdxBlock *blocks = width == 64 ? idx_blocks_4 : width == 32 ? idx_blocks_2 : idx_blocks_1;
    const int64_t r_max = width == 64 ? 6 : 12, taps = g->kw * g->c, dstep = g->sw * g->c;
    FOR_WINDOWS(r, i, y + g->top, g->sh, g->kh, g->out_h)
    for (int64_t s = 0; s < g->kw; s++) {
        const int64_t before = g->left - s, after = g->w + g->left - s; /* 0 <= j·sw - before < w */
        const int64_t first = before > 0 ? (before + g->sw - 1) / g->sw : 0;
        const int64_t end = after > 0 ? (after + g->sw - 1) / g->sw : 0;
        const int64_t count = (end < g->out_w ? end : g->out_w) - first;
        if (count <= 0)
            continue;
        const int64_t nblocks = (count + r_max - 1) / r_max;
        for (int64_t k = 0, j = first; k < nblocks; k++) {
            const int64_t size = count / nblocks + (k < count % nblocks);
            blocks[size - 1](grad + ((b * g->out_h + i) * g->out_w + j) * cout, cout, wt + r * taps + s * g->c + ch,
                             g->kh * taps, row + (j * g->sw - before) * g->c + ch, dstep);
            j += size;
        }
    }
}

/* dx = col2im(grad · wt) as above; returns 0, or -1 (nothing written) when the CPU lacks AVX-512F or cin is not a
 * multiple of 16. grad (n, out_h, out_w, cout), wt (cout, kh·kw·c), dx (n, h, w, c) per g. Each dx row is zeroed by
 * one memset, then summed panel by panel: a memset per pixel and panel (64-256 bytes) ran as a `rep stos` each, and
 * cost a tenth of a stride-2 input gradient in a training step. */
static int conv_input_grad_avx512(const float *grad, const float *wt, const PoolGeometry *g, int64_t cout, float *dx)
{
    if (!gemm_takes() || g->c % 16 != 0)
        return -1;
    const int64_t len = g->w * g->c;
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t y = 0; y < g->h; y++) {
            float *row = dx + (b * g->h + y) * len;
            memset(row, 0, (size_t)len * sizeof(float));
            for (int64_t ch = 0; ch < g->c;) {
                const int64_t width = g->c - ch >= 64 ? 64 : g->c - ch >= 32 ? 32 : 16;
                idx_row(grad, wt, g, cout, row, b, y, ch, width);
                ch += width;
            }
        }
    return 0;
}
