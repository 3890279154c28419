/* Max and average pooling on NHWC images, any window, stride and TF padding (included by native.c once per
 * type, like native_kernels.h, with T, LANE_INT and NAME defined). The NumPy twins are maxpool_* / avgpool_*
 * in xpnn/layers/pool.py; these loops give their bits:
 * - max: each window's maximum (a NaN beats any number; a zero maximum is +0) and its first cell in row-major
 *   order holding that value (a padded cell, -inf, wins only a window whose real cells are all -inf: at cell 0);
 * - average: the window's real cells summed in row-major order from +0, divided by their count;
 * - both backwards gather, for each input cell, the windows that hold it in the order (window row, window
 *   column) of the cell's place in them, from +0: the order in which the twin's strided adds reach it.
 * Channels are the vectors, POOL_VECS 64-byte vectors per pass (one AVX-512 register each in the x86-64-v4
 * clones, two AVX2 ones in the v3 clones), channels past the last whole pass a scalar loop. The max forward
 * keeps POOL_GROUP windows side by side, their running maxima and winners in registers: explicit AVX-512 where
 * the CPU has it, generic loops that GCC vectorises otherwise. The backwards keep each input cell's sum in
 * registers over the windows that hold it. Winners are stored as uint8 (windows of up to 256 cells) or int32,
 * the dtype of the twin's cache (native.winner_dtype); a forward of 128 images 32×32×32 (3×3/2 SAME, float32)
 * reads 16 MB, writes 4 MB and 1 MB of winners.
 * Measured on the 2-core AMD EPYC VM (one thread, images in cache): 4.8 µs per image forward (was 18.5), 7 µs
 * backward (was 18.7), a copy of the image 2.6 µs; from DRAM each pass runs at the VM's ~7 GB/s. */

#ifndef POOL_VECS
#define POOL_VECS 2  /* 64-byte vectors per pass: 32 floats or 16 doubles */
#define POOL_GROUP 4 /* max windows side by side: 8 running maxima and 8 winners, in AVX-512 registers */

/* The windows that hold an input cell, in the order of its place in them (row-major): along one axis, the
 * cell at padded position q sits at offset q % stride of window q / stride, at offset + stride of the window
 * before, and so on while the offset is inside the window. */
#define FOR_WINDOWS(offset, window, q, stride, k, count)                                                   \
    for (int64_t offset = (q) % (stride), window = (q) / (stride); offset < (k) && window >= 0;             \
         offset += (stride), window--)                                                                      \
        if (window < (count))

/* FOR_WINDOWS from a cell's first offset and window (at[0], at[1] along rows; at[2], at[3] along columns),
 * which the backward loops step along a row with pool_step instead of dividing per cell. */
#define FOR_WINDOWS_FROM(offset, window, offset0, window0, stride, k, count)                                \
    for (int64_t offset = (offset0), window = (window0); offset < (k) && window >= 0;                      \
         offset += (stride), window--)                                                                      \
        if (window < (count))

static inline void pool_step(int64_t *offset, int64_t *window, int64_t stride)
{
    if (++*offset == stride) {
        *offset = 0;
        ++*window;
    }
}

/* The offsets [lo, hi) of window `o`'s cells (along one axis) that lie inside an input of `size` cells: the
 * window starts at padded position o·stride, `pad` cells before the input's first. */
static inline void pool_span(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t size, int64_t *lo,
                             int64_t *hi)
{
    const int64_t start = o * stride - pad;
    *lo = start < 0 ? -start : 0;
    *hi = start + k > size ? size - start : k;
    if (*hi < *lo)
        *hi = *lo;
}

/* Memory-bound loops over whole vectors: compiled for AVX-512 (x86-64-v4) too, the loader picks the widest. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define POOL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define POOL_CLONES
#endif
#define POOL_INLINE static inline __attribute__((always_inline))

/* The max forward's AVX-512 kernels, float32 and float64 (GCC's vectorisation of the generic loops below is
 * fine for float32 but falls back to scalar code for float64): POOL_GROUP or 1 windows side by side, two
 * vectors of channels each; the running max and winner of each are registers, a window cell costs one load,
 * two compares and two masked moves per vector. Chosen per call where the CPU has AVX-512F and native.c's
 * xpnn_avx512 switch is on (tests compare them with the generic loops). */
extern int xpnn_avx512;
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define POOL_AVX512 1
#define POOL_MAX_AVX512(SUF, G, TYPE, VEC, MASK, L, SET1, LOAD, STORE, CMP, MOV, ADD, SET1I, MOVI, STORE8, STORE32) \
    __attribute__((target("avx512f"))) static void max_windows##G##_avx512_##SUF(                                \
        const TYPE *first, int64_t row, int64_t col, int64_t step, int64_t r0, int64_t r1, int64_t s0, int64_t s1, \
        int64_t kw, TYPE *out, char *argmax, int64_t step_out, int arg_bytes)                                      \
    {                                                                                                              \
        VEC best[G][2];                                                                                            \
        __m512i arg[G][2];                                                                                         \
        for (int k = 0; k < G; k++)                                                                                \
            for (int q = 0; q < 2; q++) {                                                                          \
                best[k][q] = SET1(-(TYPE)INFINITY);                                                                \
                arg[k][q] = _mm512_setzero_si512();                                                                \
            }                                                                                                      \
        for (int64_t r = r0; r < r1; r++)                                                                          \
            for (int64_t s = s0; s < s1; s++) {                                                                    \
                const TYPE *p = first + (r - r0) * row + (s - s0) * col;                                           \
                const __m512i cell = SET1I(r * kw + s);                                                            \
                for (int k = 0; k < G; k++)                                                                        \
                    for (int q = 0; q < 2; q++) {                                                                  \
                        const VEC v = LOAD(p + k * step + q * L), m = best[k][q];                                  \
                        const MASK wins = CMP(v, m, _CMP_NLE_UQ) & CMP(m, m, _CMP_ORD_Q); /* larger, or NaN */     \
                        best[k][q] = MOV(m, wins, v);                                                              \
                        arg[k][q] = MOVI(arg[k][q], wins, cell);                                                   \
                    }                                                                                              \
            }                                                                                                      \
        for (int k = 0; k < G; k++)                                                                                \
            for (int q = 0; q < 2; q++) {                                                                          \
                const int64_t at = k * step_out + q * L;                                                           \
                STORE(out + at, ADD(best[k][q], SET1(0))); /* -0 + 0 = +0 */                                       \
                if (arg_bytes == 1)                                                                                \
                    STORE8(argmax + at, (MASK)-1, arg[k][q]);                                                      \
                else                                                                                               \
                    STORE32(argmax + 4 * at, (MASK)-1, arg[k][q]);                                                 \
            }                                                                                                      \
    }
#define POOL_MAX_AVX512_F32(G)                                                                                      \
    POOL_MAX_AVX512(f32, G, float, __m512, __mmask16, 16, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps,        \
                    _mm512_cmp_ps_mask, _mm512_mask_mov_ps, _mm512_add_ps, _mm512_set1_epi32, _mm512_mask_mov_epi32, \
                    _mm512_mask_cvtepi32_storeu_epi8, _mm512_mask_storeu_epi32)
#define POOL_MAX_AVX512_F64(G)                                                                                      \
    POOL_MAX_AVX512(f64, G, double, __m512d, __mmask8, 8, _mm512_set1_pd, _mm512_loadu_pd, _mm512_storeu_pd,        \
                    _mm512_cmp_pd_mask, _mm512_mask_mov_pd, _mm512_add_pd, _mm512_set1_epi64, _mm512_mask_mov_epi64, \
                    _mm512_mask_cvtepi64_storeu_epi8, _mm512_mask_cvtepi64_storeu_epi32)
POOL_MAX_AVX512_F32(4)
POOL_MAX_AVX512_F32(1)
POOL_MAX_AVX512_F64(4)
POOL_MAX_AVX512_F64(1)

static int pool_avx512(void)
{
    __builtin_cpu_init();
    return xpnn_avx512 && __builtin_cpu_supports("avx512f");
}
#else
#define POOL_AVX512 0
static int pool_avx512(void) { return 0; }
#endif
#endif

typedef T NAME(pool_vec) __attribute__((vector_size(64)));
typedef LANE_INT NAME(pool_mask) __attribute__((vector_size(64))); /* comparisons give all-ones lanes */
#define PV NAME(pool_vec)
#define PM NAME(pool_mask)
#define PL ((int64_t)(64 / sizeof(T))) /* lanes per vector */

/* Vectors move through memcpy (unaligned, no aliasing trouble) and out-parameters: a function returning a
 * 64-byte vector would change ABI between the clones (GCC's -Wpsabi). */
#define POOL_LOAD(v, p) memcpy(&(v), (p), sizeof(v))

/* PL winners (uint8 or int32) widened to T-wide lanes (a lane loop: GCC 12 turns them into one
 * widening move, where it splits __builtin_convertvector into lanes). */
POOL_INLINE void NAME(pool_load_cells)(PM *cells, const void *p, int arg_bytes)
{
    LANE_INT lanes[PL];
    if (arg_bytes == 1)
        for (int64_t lane = 0; lane < PL; lane++)
            lanes[lane] = ((const uint8_t *)p)[lane];
    else
        for (int64_t lane = 0; lane < PL; lane++)
            lanes[lane] = ((const int32_t *)p)[lane];
    memcpy(cells, lanes, sizeof *cells);
}

/* ---- max forward ------------------------------------------------------------------------------------------- */

/* The max and first winner of `group` windows side by side (independent chains for the CPU to overlap), `step`
 * values apart, over POOL_VECS whole vectors of channels: the real cells of each window are rows [r0, r1) ×
 * columns [s0, s1), `first` points at the first window's cell (r0, s0), rows `row` and columns `col` values
 * apart; the results go to out and argmax (`arg_bytes` each), `step_out` values apart. */
POOL_INLINE void NAME(max_windows)(const T *first, int64_t row, int64_t col, int64_t step, int64_t group, int64_t r0,
                                   int64_t r1, int64_t s0, int64_t s1, int64_t kw, T *out, char *argmax,
                                   int64_t step_out, int arg_bytes)
{
    /* arrays of lanes rather than vector types: GCC 12 keeps these in registers and compiles the comparison
     * to one masked compare, where its 64-byte vector types went through scalar code here */
    enum { WIDTH = POOL_VECS * PL };
    T best[POOL_GROUP][WIDTH];
    LANE_INT arg[POOL_GROUP][WIDTH];
    for (int64_t k = 0; k < group; k++)
        for (int64_t ch = 0; ch < WIDTH; ch++) {
            best[k][ch] = -(T)INFINITY; /* where no real cell beats -inf, cell 0 wins (padding is -inf) */
            arg[k][ch] = 0;
        }
    for (int64_t r = r0; r < r1; r++) {
        LANE_INT cell = (LANE_INT)(r * kw + s0);
        for (int64_t s = s0; s < s1; s++, cell++)
            for (int64_t k = 0; k < group; k++) {
                const T *v = first + (r - r0) * row + (s - s0) * col + k * step;
                for (int64_t ch = 0; ch < WIDTH; ch++) {
                    const T value = v[ch], m = best[k][ch];
                    const int wins = !(value <= m) & (m == m); /* larger, or the first NaN */
                    best[k][ch] = wins ? value : m;
                    arg[k][ch] = wins ? cell : arg[k][ch];
                }
            }
    }
    for (int64_t k = 0; k < group; k++) {
        for (int64_t ch = 0; ch < WIDTH; ch++)
            out[k * step_out + ch] = best[k][ch] + (T)0; /* -0 + 0 = +0: a zero maximum is +0, as the twin's */
        if (arg_bytes == 1)
            for (int64_t ch = 0; ch < WIDTH; ch++)
                ((uint8_t *)argmax)[k * step_out + ch] = (uint8_t)arg[k][ch];
        else
            for (int64_t ch = 0; ch < WIDTH; ch++)
                ((int32_t *)argmax)[(k * step_out + ch)] = (int32_t)arg[k][ch];
    }
}

/* max_windows for one window and `width` channels of any count, one at a time (the channels past the vectors). */
POOL_INLINE void NAME(max_window_tail)(const T *first, int64_t row, int64_t col, int64_t r0, int64_t r1, int64_t s0,
                                       int64_t s1, int64_t kw, int64_t width, T *out, char *argmax, int arg_bytes)
{
    for (int64_t ch = 0; ch < width; ch++) {
        T best = -(T)INFINITY;
        int64_t arg = 0;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t s = s0; s < s1; s++) {
                const T v = first[(r - r0) * row + (s - s0) * col + ch];
                if (!(v <= best) && best == best) {
                    best = v;
                    arg = r * kw + s;
                }
            }
        out[ch] = best + (T)0;
        if (arg_bytes == 1)
            ((uint8_t *)argmax)[ch] = (uint8_t)arg;
        else
            ((int32_t *)argmax)[ch] = (int32_t)arg;
    }
}

/* max_windows on the AVX-512 kernels (POOL_GROUP or 1 windows); never called where pool_avx512() is 0. */
static void NAME(max_windows_avx512)(int64_t group, const T *first, int64_t row, int64_t col, int64_t step, int64_t r0,
                                     int64_t r1, int64_t s0, int64_t s1, int64_t kw, T *out, char *argmax,
                                     int64_t step_out, int arg_bytes)
{
#if POOL_AVX512
    if (group == 4)
        NAME(max_windows4_avx512)(first, row, col, step, r0, r1, s0, s1, kw, out, argmax, step_out, arg_bytes);
    else
        NAME(max_windows1_avx512)(first, row, col, step, r0, r1, s0, s1, kw, out, argmax, step_out, arg_bytes);
#else
    (void)group, (void)first, (void)row, (void)col, (void)step, (void)r0, (void)r1, (void)s0, (void)s1, (void)kw;
    (void)out, (void)argmax, (void)step_out, (void)arg_bytes;
#endif
}

POOL_INLINE int NAME(max_forward_as)(const T *x, const PoolGeometry *g, T *out, void *argmax, int arg_bytes)
{
    const int64_t c = g->c, row = g->w * c, step = g->sw * c, block = POOL_VECS * PL;
    const int avx512 = POOL_VECS == 2 && POOL_GROUP == 4 && pool_avx512();
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t i = 0; i < g->out_h; i++) {
            int64_t r0, r1;
            pool_span(i, g->sh, g->top, g->kh, g->h, &r0, &r1);
            for (int64_t j = 0, group; j < g->out_w; j += group) {
                int64_t s0, s1;
                pool_span(j, g->sw, g->left, g->kw, g->w, &s0, &s1);
                /* POOL_GROUP windows side by side where they all lie inside the input's columns */
                group = s0 == 0 && j + POOL_GROUP <= g->out_w &&
                                (j + POOL_GROUP - 1) * g->sw - g->left + g->kw <= g->w
                            ? POOL_GROUP
                            : 1;
                const int64_t at = ((b * g->out_h + i) * g->out_w + j) * c;
                const T *first = r0 < r1 && s0 < s1
                                     ? x + ((b * g->h + i * g->sh - g->top + r0) * g->w + j * g->sw - g->left + s0) * c
                                     : x;
                char *a = (char *)argmax + at * arg_bytes;
                int64_t c0 = 0;
                for (; avx512 && c0 + block <= c; c0 += block)
                    NAME(max_windows_avx512)(group, first + c0, row, c, step, r0, r1, s0, s1, g->kw, out + at + c0,
                                             a + c0 * arg_bytes, c, arg_bytes);
                for (; c0 + block <= c; c0 += block)
                    if (group == POOL_GROUP)
                        NAME(max_windows)(first + c0, row, c, step, POOL_GROUP, r0, r1, s0, s1, g->kw, out + at + c0,
                                          a + c0 * arg_bytes, c, arg_bytes);
                    else
                        NAME(max_windows)(first + c0, row, c, step, 1, r0, r1, s0, s1, g->kw, out + at + c0,
                                          a + c0 * arg_bytes, c, arg_bytes);
                for (int64_t k = 0; k < group && c0 < c; k++)
                    NAME(max_window_tail)(first + c0 + k * step, row, c, r0, r1, s0, s1, g->kw, c - c0,
                                          out + at + c0 + k * c, a + (c0 + k * c) * arg_bytes, arg_bytes);
            }
        }
    return 0;
}

/* out (n, out_h, out_w, c): each window's max; argmax: its first winning cell, uint8 (arg_bytes 1) or int32 (4). */
POOL_CLONES int NAME(max_pool_forward)(const T *x, const PoolGeometry *g, T *out, void *argmax, int64_t arg_bytes)
{
    return arg_bytes == 1 ? NAME(max_forward_as)(x, g, out, argmax, 1) : NAME(max_forward_as)(x, g, out, argmax, 4);
}

/* ---- max backward ------------------------------------------------------------------------------------------ */

/* One input cell's gradient over POOL_VECS vectors of channels from `c0`: the sum, from +0 in the twin's order,
 * of the gradients of the windows that hold it and that it won (adding nothing where it lost is adding the
 * twin's +0: a sum from +0 is never -0, so +0 changes no bit). at: FOR_WINDOWS_FROM's starts. */
POOL_INLINE void NAME(max_cell_grad)(const T *dout, const char *argmax, const PoolGeometry *g, int64_t b,
                                     const int64_t at[4], int64_t c0, T *d, int arg_bytes)
{
    PV acc[POOL_VECS];
    for (int q = 0; q < POOL_VECS; q++)
        acc[q] = (PV){0};
    FOR_WINDOWS_FROM(r, i, at[0], at[1], g->sh, g->kh, g->out_h)
    FOR_WINDOWS_FROM(s, j, at[2], at[3], g->sw, g->kw, g->out_w)
    {
        const int64_t o = ((b * g->out_h + i) * g->out_w + j) * g->c + c0;
        const PM cell = (PM){0} + (LANE_INT)(r * g->kw + s);
        for (int q = 0; q < POOL_VECS; q++) {
            PM cells;
            PV gv;
            NAME(pool_load_cells)(&cells, argmax + (o + q * PL) * arg_bytes, arg_bytes);
            POOL_LOAD(gv, dout + o + q * PL);
            const PM won = cells == cell;
            const PV sum = acc[q] + gv;
            acc[q] = (PV)(((PM)sum & won) | ((PM)acc[q] & ~won));
        }
    }
    for (int q = 0; q < POOL_VECS; q++)
        memcpy(d + q * PL, &acc[q], sizeof acc[q]);
}

/* max_cell_grad for `width` channels of any count, one at a time. */
POOL_INLINE void NAME(max_cell_grad_tail)(const T *dout, const char *argmax, const PoolGeometry *g, int64_t b,
                                          const int64_t at[4], int64_t c0, int64_t width, T *d, int arg_bytes)
{
    for (int64_t ch = 0; ch < width; ch++)
        d[ch] = 0;
    FOR_WINDOWS_FROM(r, i, at[0], at[1], g->sh, g->kh, g->out_h)
    FOR_WINDOWS_FROM(s, j, at[2], at[3], g->sw, g->kw, g->out_w)
    {
        const int64_t o = ((b * g->out_h + i) * g->out_w + j) * g->c + c0, cell = r * g->kw + s;
        for (int64_t ch = 0; ch < width; ch++) {
            const int64_t won = arg_bytes == 1 ? ((const uint8_t *)argmax)[o + ch] : ((const int32_t *)argmax)[o + ch];
            if (won == cell)
                d[ch] += dout[o + ch];
        }
    }
}

POOL_INLINE int NAME(max_backward_as)(const T *dout, const void *argmax, const PoolGeometry *g, T *dx, int arg_bytes)
{
    const int64_t c = g->c, block = POOL_VECS * PL;
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t y = 0; y < g->h; y++) {
            int64_t at[4] = {(y + g->top) % g->sh, (y + g->top) / g->sh, g->left % g->sw, g->left / g->sw};
            for (int64_t xx = 0; xx < g->w; xx++, pool_step(&at[2], &at[3], g->sw)) {
                T *d = dx + ((b * g->h + y) * g->w + xx) * c;
                int64_t c0 = 0;
                for (; c0 + block <= c; c0 += block)
                    NAME(max_cell_grad)(dout, argmax, g, b, at, c0, d + c0, arg_bytes);
                if (c0 < c)
                    NAME(max_cell_grad_tail)(dout, argmax, g, b, at, c0, c - c0, d + c0, arg_bytes);
            }
        }
    return 0;
}

/* dx (n, h, w, c) = each input cell's sum of the gradients of the windows it won, in the twin's order. */
POOL_CLONES int NAME(max_pool_backward)(const T *dout, const void *argmax, int64_t arg_bytes, const PoolGeometry *g,
                                        T *dx)
{
    return arg_bytes == 1 ? NAME(max_backward_as)(dout, argmax, g, dx, 1)
                          : NAME(max_backward_as)(dout, argmax, g, dx, 4);
}

/* ---- average ----------------------------------------------------------------------------------------------- */

/* out (n, out_h, out_w, c): each window's real cells summed in row-major order from +0 (as numpy.sum starts
 * from its identity; the twin's padded cells add +0 and change nothing), divided by counts (out_h, out_w). */
POOL_CLONES int NAME(avg_pool_forward)(const T *x, const T *counts, const PoolGeometry *g, T *out)
{
    const int64_t c = g->c, row = g->w * c, block = POOL_VECS * PL;
    for (int64_t b = 0; b < g->n; b++)
        for (int64_t i = 0; i < g->out_h; i++) {
            int64_t r0, r1;
            pool_span(i, g->sh, g->top, g->kh, g->h, &r0, &r1);
            for (int64_t j = 0; j < g->out_w; j++) {
                int64_t s0, s1;
                pool_span(j, g->sw, g->left, g->kw, g->w, &s0, &s1);
                T *o = out + ((b * g->out_h + i) * g->out_w + j) * c;
                const T *first = r0 < r1 && s0 < s1
                                     ? x + ((b * g->h + i * g->sh - g->top + r0) * g->w + j * g->sw - g->left + s0) * c
                                     : x;
                const T count = counts[i * g->out_w + j];
                int64_t c0 = 0;
                for (; c0 + block <= c; c0 += block) {
                    PV sum[POOL_VECS];
                    for (int q = 0; q < POOL_VECS; q++)
                        sum[q] = (PV){0};
                    for (int64_t r = 0; r < r1 - r0; r++)
                        for (int64_t s = 0; s < s1 - s0; s++)
                            for (int q = 0; q < POOL_VECS; q++) {
                                PV v;
                                POOL_LOAD(v, first + r * row + s * c + c0 + q * PL);
                                sum[q] += v;
                            }
                    for (int q = 0; q < POOL_VECS; q++) {
                        const PV mean = sum[q] / count;
                        memcpy(o + c0 + q * PL, &mean, sizeof mean);
                    }
                }
                for (int64_t ch = c0; ch < c; ch++) {
                    T sum = 0;
                    for (int64_t r = 0; r < r1 - r0; r++)
                        for (int64_t s = 0; s < s1 - s0; s++)
                            sum += first[r * row + s * c + ch];
                    o[ch] = sum / count;
                }
            }
        }
    return 0;
}

/* dx (n, h, w, c) = each input cell's sum of dout / count over the windows that hold it, in the twin's order.
 * Each image's shares dout / count are computed once, into a scratch image (the twin's `dout / counts`).
 * Returns 0, or -1 when out of memory. */
POOL_CLONES int NAME(avg_pool_backward)(const T *dout, const T *counts, const PoolGeometry *g, T *dx)
{
    const int64_t c = g->c, outputs = g->out_h * g->out_w, block = POOL_VECS * PL;
    T *share = malloc((size_t)(outputs * c) * sizeof(T));
    if (!share)
        return -1;
    for (int64_t b = 0; b < g->n; b++) {
        const T *gb = dout + b * outputs * c;
        for (int64_t o = 0; o < outputs; o++)
            for (int64_t ch = 0; ch < c; ch++)
                share[o * c + ch] = gb[o * c + ch] / counts[o];
        for (int64_t y = 0; y < g->h; y++) {
            int64_t at[4] = {(y + g->top) % g->sh, (y + g->top) / g->sh, g->left % g->sw, g->left / g->sw};
            for (int64_t xx = 0; xx < g->w; xx++, pool_step(&at[2], &at[3], g->sw)) {
                T *d = dx + ((b * g->h + y) * g->w + xx) * c;
                int64_t c0 = 0;
                for (; c0 + block <= c; c0 += block) {
                    PV acc[POOL_VECS];
                    for (int q = 0; q < POOL_VECS; q++)
                        acc[q] = (PV){0};
                    FOR_WINDOWS_FROM(r, i, at[0], at[1], g->sh, g->kh, g->out_h)
                    FOR_WINDOWS_FROM(s, j, at[2], at[3], g->sw, g->kw, g->out_w)
                    for (int q = 0; q < POOL_VECS; q++) {
                        PV v;
                        POOL_LOAD(v, share + (i * g->out_w + j) * c + c0 + q * PL);
                        acc[q] += v;
                    }
                    for (int q = 0; q < POOL_VECS; q++)
                        memcpy(d + c0 + q * PL, &acc[q], sizeof acc[q]);
                }
                if (c0 < c) {
                    for (int64_t ch = c0; ch < c; ch++)
                        d[ch] = 0;
                    FOR_WINDOWS_FROM(r, i, at[0], at[1], g->sh, g->kh, g->out_h)
                    FOR_WINDOWS_FROM(s, j, at[2], at[3], g->sw, g->kw, g->out_w)
                    for (int64_t ch = c0; ch < c; ch++)
                        d[ch] += share[(i * g->out_w + j) * c + ch];
                }
            }
        }
    }
    free(share);
    return 0;
}

#undef PV
#undef PM
#undef PL
