/* The float32 forward for stride-1 convs whose pool width divides 16, on AVX-512 (included by native.c).
 *
 * The generic kernel vectorises over 8 output channels and broadcasts one input value per multiply-add,
 * which caps it at 8 lanes per load. Here one 16-lane vector holds 16 adjacent conv outputs of one row
 * and one channel, read straight from a channel-planar copy of the padded image, and each weight is
 * broadcast from memory into its multiply-add: 16 lanes per load. Each conv row then folds into a running
 * max and first row per lane; the 16 lanes are 16 / pw windows, reduced by a butterfly after the window's rows.
 * Sums run in the generic kernel's order (kernel row, kernel column, input channel), one fused
 * multiply-add each, so both give the same bits (tests/test_native.py). */

#include <immintrin.h>

#define AVX512_CHANNELS 8 /* channels per pass: 8 sums, 8 running maxima and 8 winning rows stay in registers */

/* Whether this kernel takes geometry g; NAME-free because it exists for float32 only. */
static int avx512_takes(const Geometry *g)
{
    __builtin_cpu_init(); /* idempotent; makes __builtin_cpu_supports safe wherever the library is loaded from */
    return g->sh == 1 && g->sw == 1 && g->pw <= 16 && 16 % g->pw == 0 && __builtin_cpu_supports("avx512f");
}

/* Reduce each group of pw lanes (pw a power of 2) to its max and first row-major cell, in every lane of the
 * group: a butterfly over lane ^ s for s = pw/2, ..., 1, where the larger value wins, a NaN beats any number
 * and equal values (or two NaNs) go to the earlier cell. No branches: the winners are data. */
__attribute__((target("avx512f"))) static inline void avx512_window_max(__m512 *value, __m512i *cell, int64_t pw)
{
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int64_t s = pw / 2; s >= 1; s /= 2) {
        const __m512i partner = _mm512_xor_si512(lane, _mm512_set1_epi32((int32_t)s));
        const __m512 u = _mm512_permutexvar_ps(partner, *value);
        const __m512i u_cell = _mm512_permutexvar_epi32(partner, *cell);
        const __mmask16 u_nan = _mm512_cmp_ps_mask(u, u, _CMP_UNORD_Q);
        const __mmask16 v_nan = _mm512_cmp_ps_mask(*value, *value, _CMP_UNORD_Q);
        const __mmask16 same = _mm512_cmp_ps_mask(u, *value, _CMP_EQ_OQ) | (u_nan & v_nan);
        const __mmask16 take = (__mmask16)((u_nan & ~v_nan) | _mm512_cmp_ps_mask(u, *value, _CMP_GT_OQ) |
                                           (same & _mm512_cmplt_epi32_mask(u_cell, *cell)));
        *value = _mm512_mask_blend_ps(take, *value, u);
        *cell = _mm512_mask_blend_epi32(take, *cell, u_cell);
    }
}

__attribute__((target("avx512f"))) static int forward_f32_avx512(const float *x, const float *w_lanes,
                                                                   const Geometry *g, float *pooled, int64_t *argmax)
{
    const int64_t cl = (g->cout + 7) / 8 * 8, conv_w = g->out_w * g->pw, blocks = (conv_w + 15) / 16;
    const int64_t plane_w = blocks * 16 + g->fw - 1; /* every 16-lane load of every block stays inside */
    const int64_t plane = g->hp * plane_w;
    const int64_t taps = g->fh * g->fw * g->cin;
    float *planes = calloc((size_t)(g->cin * plane), sizeof(float)); /* (cin, hp, plane_w), zero borders */
    int64_t *tap_at = malloc((size_t)taps * sizeof(int64_t));       /* each tap's offset in the planes */
    if (!planes || !tap_at) {
        free(planes);
        free(tap_at);
        return -1;
    }
    for (int64_t dy = 0, t = 0; dy < g->fh; dy++)
        for (int64_t dx = 0; dx < g->fw; dx++)
            for (int64_t ci = 0; ci < g->cin; ci++, t++)
                tap_at[t] = ci * plane + dy * plane_w + dx;
    for (int64_t b = 0; b < g->n; b++) {
        const float *image = x + b * g->h * g->w * g->cin;
        for (int64_t y = 0; y < g->h; y++)
            for (int64_t xx = 0; xx < g->w; xx++)
                for (int64_t ci = 0; ci < g->cin; ci++)
                    planes[ci * plane + (y + g->top) * plane_w + xx + g->left] = image[(y * g->w + xx) * g->cin + ci];
        for (int64_t i = 0; i < g->out_h; i++)
            for (int64_t block = 0; block < blocks; block++)
                for (int64_t co = 0; co < cl; co += AVX512_CHANNELS) {
                    __m512 best[AVX512_CHANNELS];
                    __m512i row[AVX512_CHANNELS];
                    for (int64_t r = 0; r < g->ph; r++) {
                        const float *corner = planes + (i * g->ph + r) * plane_w + block * 16;
                        __m512 acc[AVX512_CHANNELS];
                        for (int k = 0; k < AVX512_CHANNELS; k++)
                            acc[k] = _mm512_setzero_ps();
                        for (int64_t t = 0; t < taps; t++) { /* (dy, dx, ci) in the kernel's order */
                            const __m512 v = _mm512_loadu_ps(corner + tap_at[t]);
                            const float *wk = w_lanes + t * cl + co;
                            for (int k = 0; k < AVX512_CHANNELS; k++)
                                acc[k] = _mm512_fmadd_ps(v, _mm512_set1_ps(wk[k]), acc[k]);
                        }
                        for (int k = 0; k < AVX512_CHANNELS; k++) {
                            if (r == 0) {
                                best[k] = acc[k];
                                row[k] = _mm512_setzero_si512();
                                continue;
                            }
                            const __mmask16 wins = _mm512_cmp_ps_mask(acc[k], best[k], _CMP_GT_OQ) |
                                                   (_mm512_cmp_ps_mask(acc[k], acc[k], _CMP_UNORD_Q) &
                                                    _mm512_cmp_ps_mask(best[k], best[k], _CMP_ORD_Q));
                            best[k] = _mm512_mask_blend_ps(wins, best[k], acc[k]);
                            row[k] = _mm512_mask_blend_epi32(wins, row[k], _mm512_set1_epi32((int32_t)r));
                        }
                    }
                    const __m512i column = _mm512_and_si512(
                        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                        _mm512_set1_epi32((int32_t)(g->pw - 1)));
                    for (int k = 0; k < AVX512_CHANNELS && co + k < g->cout; k++) {
                        __m512i cell = _mm512_add_epi32(_mm512_mullo_epi32(row[k], _mm512_set1_epi32((int32_t)g->pw)),
                                                        column);
                        avx512_window_max(&best[k], &cell, g->pw);
                        float lanes[16];
                        int32_t cells[16];
                        _mm512_storeu_ps(lanes, best[k]);
                        _mm512_storeu_si512(cells, cell);
                        for (int64_t lane0 = 0; lane0 < 16 && block * 16 + lane0 < conv_w; lane0 += g->pw) {
                            const int64_t j = (block * 16 + lane0) / g->pw;
                            const int64_t at = ((b * g->out_h + i) * g->out_w + j) * g->cout + co + k;
                            pooled[at] = lanes[lane0];
                            argmax[at] = cells[lane0];
                        }
                    }
                }
    }
    free(planes);
    free(tap_at);
    return 0;
}
