/* float32 GEMM on AVX-512 for the chunked convolutions and dense layers (included by native.c).
 *
 * c (m, n) = a · b, b and c row-major with n a multiple of 16, a read through any element strides
 * (a[i][t] at a + i·a_row + t·a_col: the columns of a chunk, or their transpose for the weight gradient).
 * Each register block holds R rows × V 16-lane vectors of c; per step t it loads V vectors of b's row t and
 * broadcasts R values of a into R·V fused multiply-adds. Every c value is one sum over t = 0, 1, ... in
 * order, whatever the block or the caller's chunking, so results never depend on the thread count.
 * Measured on the AMD EPYC (Zen 5) VM of docs/benchmarks.md, one core: 233-262 GFLOP/s on the VGG-style
 * and AlexNet-style conv shapes against 111-122 for NumPy's OpenBLAS, whose kernels this environment pins to
 * Haswell (AVX2) with OPENBLAS_CORETYPE. */

#define GEMM_BLOCK(R, V)                                                                                     \
    __attribute__((target("avx512f"))) static void gemm_block_##R##_##V(                                     \
        const float *a, int64_t a_row, int64_t a_col, const float *b, int64_t ldb, float *c, int64_t ldc,    \
        int64_t k, const float *bias, int relu)                                                              \
    {                                                                                                        \
        __m512 acc[R][V];                                                                                    \
        for (int r = 0; r < R; r++)                                                                          \
            for (int v = 0; v < V; v++)                                                                      \
                acc[r][v] = _mm512_setzero_ps();                                                             \
        for (int64_t t = 0; t < k; t++) {                                                                    \
            __m512 bv[V];                                                                                    \
            for (int v = 0; v < V; v++)                                                                      \
                bv[v] = _mm512_loadu_ps(b + t * ldb + 16 * v);                                               \
            for (int r = 0; r < R; r++) {                                                                    \
                const __m512 av = _mm512_set1_ps(a[r * a_row + t * a_col]);                                  \
                for (int v = 0; v < V; v++)                                                                  \
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);                                       \
            }                                                                                                \
        }                                                                                                    \
        for (int r = 0; r < R; r++)                                                                          \
            for (int v = 0; v < V; v++) {                                                                    \
                __m512 y = acc[r][v];                                                                        \
                if (bias) /* one rounding, as NumPy's out += b */                                            \
                    y = _mm512_add_ps(y, _mm512_loadu_ps(bias + 16 * v));                                    \
                if (relu) /* max(0, y) returns y when y is NaN or a zero, as numpy.maximum(out, 0.0) */     \
                    y = _mm512_max_ps(_mm512_setzero_ps(), y);                                               \
                _mm512_storeu_ps(c + r * ldc + 16 * v, y);                                                   \
            }                                                                                                \
    }

GEMM_BLOCK(6, 4)  /* 24 accumulators: 64 columns */
GEMM_BLOCK(4, 4)  /* the rows left over, 4 and 1 at a time (a 64-channel weight gradient has 6·10 + 4) */
GEMM_BLOCK(1, 4)
GEMM_BLOCK(12, 2) /* 32 columns */
GEMM_BLOCK(4, 2)
GEMM_BLOCK(1, 2)
GEMM_BLOCK(12, 1) /* 16 columns */
GEMM_BLOCK(4, 1)
GEMM_BLOCK(1, 1)

/* Whether gemm_f32 runs on this CPU; NAME-free, float32 only. */
static int gemm_takes(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* c = a · b as above, then + bias (n values; NULL for none) and max(·, 0) with relu, in registers before the store
 * (a Dense layer's `out += b` and a ReLU after it, the same bits); returns 0, or -1 when the CPU lacks AVX-512F or
 * n is not a multiple of 16. */
static int gemm_avx512(const float *a, int64_t a_row, int64_t a_col, const float *b, float *c, int64_t m, int64_t k,
                       int64_t n, const float *bias, int relu)
{
    if (!gemm_takes() || n % 16 != 0)
        return -1;
    int64_t j = 0;
    for (; j + 64 <= n; j += 64) {
        int64_t i = 0;
        for (; i + 6 <= m; i += 6)
            gemm_block_6_4(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
        for (; i + 4 <= m; i += 4)
            gemm_block_4_4(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
        for (; i < m; i++)
            gemm_block_1_4(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
    }
    for (; j + 32 <= n; j += 32) {
        int64_t i = 0;
        for (; i + 12 <= m; i += 12)
            gemm_block_12_2(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
        for (; i + 4 <= m; i += 4)
            gemm_block_4_2(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
        for (; i < m; i++)
            gemm_block_1_2(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
    }
    for (; j < n; j += 16) {
        int64_t i = 0;
        for (; i + 12 <= m; i += 12)
            gemm_block_12_1(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
        for (; i + 4 <= m; i += 4)
            gemm_block_4_1(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
        for (; i < m; i++)
            gemm_block_1_1(a + i * a_row, a_row, a_col, b + j, n, c + i * n + j, n, k, bias ? bias + j : NULL, relu);
    }
    return 0;
}
