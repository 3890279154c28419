/* Native CPU kernels for the fused Conv2D -> ReLU -> MaxPool2D unit (xpnn/layers/fused.py).
 *
 * The NumPy twin is ConvReluPool's im2col + GEMM path: these loops compute the same window maxima,
 * first arg-maxima and gradients, but never write the conv output to memory. Each pool window's
 * conv outputs are summed in registers and reduced to their max on the spot, which is what makes
 * the small-channel reference conv (cin 3, cout 8) several times cheaper than an im2col GEMM whose
 * rows are 48 values long. xpnn/backends/native.py loads this library with ctypes (calls release the
 * GIL, so xpnn's chunk workers run them side by side); it builds with or without Python's headers (see
 * PyInit__native at the end).
 *
 * The kernels themselves are in native_kernels.h, included once for float32 and once for float64; the
 * pooling layers' kernels (max and average, any window, stride and padding) in native_pool.h, likewise, and
 * the chunked convolution's col2im in native_conv.h; BatchNormalization's passes in native_norm.h; a float32
 * AVX-512 GEMM in native_gemm.h; Adam's update in one pass in native_optim.h; a blocked transpose in
 * native_transpose.h.
 * Layouts are TensorFlow's: images (n, h, w, cin), kernels (fh, fw, cin, cout), pooled (n, out_h, out_w, cout).
 * Sums run in the order (kernel row, kernel column, input channel), each with one multiply-add.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One build runs well on every x86-64: GCC compiles the kernels for AVX2+FMA (x86-64-v3) and the baseline and
 * picks one when the library loads. (Measured on the reference conv: the haswell and skylake-avx512 tunings ran
 * 3x slower than x86-64-v3; x86-64-v4 was no faster.) */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#define CELLS 8 /* window cells summed together: each weight vector loaded feeds 8 multiply-adds (AVX2 has 16 registers) */

typedef struct {
    int64_t n, h, w, cin;      /* the input images */
    int64_t top, left, hp, wp; /* SAME/VALID padding: the padded image is (hp, wp, cin), the input at (top, left) */
    int64_t fh, fw, cout;      /* the kernel */
    int64_t sh, sw;            /* conv strides */
    int64_t ph, pw;            /* pool window, equal to the pool stride; the windows tile the conv output */
    int64_t out_h, out_w;      /* pooled output */
} Geometry;

/* A pooling layer's call: NHWC input, TF padding (top, left), window, strides and output size. */
typedef struct {
    int64_t n, h, w, c;
    int64_t top, left;
    int64_t kh, kw, sh, sw;
    int64_t out_h, out_w;
} PoolGeometry;

/* Each window cell's offset from the window's corner in a padded image, row-major; NULL when out of memory. */
static int64_t *window_cells(const Geometry *g)
{
    int64_t *cell_at = malloc((size_t)(g->ph * g->pw) * sizeof(int64_t));
    if (cell_at)
        for (int64_t r = 0; r < g->ph; r++)
            for (int64_t c = 0; c < g->pw; c++)
                cell_at[r * g->pw + c] = (r * g->sh * g->wp + c * g->sw) * g->cin;
    return cell_at;
}

#define T float
#define LANE_INT int32_t
#define NAME(base) base##_f32
#include "native_pool.h"
#include "native_conv.h"
#include "native_optim.h"
#include "native_transpose.h"
#include "native_norm.h"
#include "native_kernels.h" /* last: it #undefs T, LANE_INT and NAME */

#define T double
#define LANE_INT int64_t
#define NAME(base) base##_f64
#include "native_pool.h"
#include "native_conv.h"
#include "native_optim.h"
#include "native_transpose.h"
#include "native_norm.h"
#include "native_kernels.h" /* last: it #undefs T, LANE_INT and NAME */

/* The float32 forward's AVX-512 path: GCC or Clang on x86-64, chosen per call when the CPU has AVX-512F and
 * the geometry suits it; xpnn_avx512 = 0 (set from Python, for tests) keeps every call on the generic kernel. */
#if defined(__GNUC__) && defined(__x86_64__)
#include "native_avx512.h"
#include "native_gemm.h"
#include "native_igemm.h"
int xpnn_avx512 = 1;
#else
int xpnn_avx512 = 0;
static int gemm_avx512(const float *a, int64_t a_row, int64_t a_col, const float *b, float *c, int64_t m, int64_t k,
                       int64_t n, const float *bias, int relu)
{
    (void)a, (void)a_row, (void)a_col, (void)b, (void)c, (void)m, (void)k, (void)n, (void)bias, (void)relu;
    return -1;
}
static int avx512_takes(const Geometry *g) { (void)g; return 0; }
struct ConvGeometry;
struct ConvEpilogue {
    const float *bias, *scale, *shift;
    int relu;
};
static int conv_forward_avx512(const float *x, const struct ConvGeometry *g, const float *w, int64_t ldw,
                               const struct ConvEpilogue *e, float *out)
{
    (void)x, (void)g, (void)w, (void)ldw, (void)e, (void)out;
    return -1;
}
static int conv_weight_grad_avx512(const float *x, const struct ConvGeometry *g, const float *grad, float *dwt)
{
    (void)x, (void)g, (void)grad, (void)dwt;
    return -1;
}
static int conv_weight_grad_taps_avx512(const float *x, const struct ConvGeometry *g, const float *grad, float *dw)
{
    (void)x, (void)g, (void)grad, (void)dw;
    return -1;
}
static int gemm_takes(void) { return 0; }
static int conv_input_grad_avx512(const float *grad, const float *wt, const PoolGeometry *g, int64_t cout, float *dx)
{
    (void)grad, (void)wt, (void)g, (void)cout, (void)dx;
    return -1;
}
static int forward_f32_avx512(const float *x, const float *w, const Geometry *g, float *p, int64_t *a)
{
    (void)x, (void)w, (void)g, (void)p, (void)a;
    return -1;
}
#endif

/* pooled = each window's max of conv(x, w) (no bias), argmax = its first row-major cell, NaN winning as in
 * numpy.argmax; see native_kernels.h. Returns 0, or -1 when out of memory. */
int conv_relu_pool_forward_f32(const float *x, const float *w_lanes, const Geometry *g, float *pooled,
                               int64_t *argmax)
{
    if (xpnn_avx512 && avx512_takes(g))
        return forward_f32_avx512(x, w_lanes, g, pooled, argmax);
    return forward_generic_f32(x, w_lanes, g, pooled, argmax);
}

int conv_relu_pool_forward_f64(const double *x, const double *w_lanes, const Geometry *g, double *pooled,
                               int64_t *argmax)
{
    return forward_generic_f64(x, w_lanes, g, pooled, argmax);
}

/* c (m, n) = a (m, k) · b (k, n), float32, b and c C-contiguous, a[i][t] at a + i·a_row + t·a_col; native_gemm.h.
 * Returns 0, or -1 where it does not run (no AVX-512F, xpnn_avx512 = 0, n not a multiple of 16): the caller
 * then uses NumPy's matmul. */
int gemm_f32(const float *a, int64_t a_row, int64_t a_col, const float *b, float *c, int64_t m, int64_t k, int64_t n)
{
    return xpnn_avx512 ? gemm_avx512(a, a_row, a_col, b, c, m, k, n, NULL, 0) : -1;
}

/* gemm_f32, then + bias (n values, NULL for none) and max(·, 0) when relu, before the store: a Dense layer and the
 * ReLU after it in one pass over c, with the bits of `c += bias` and `maximum(c, 0.0)` (native_gemm.h). */
int gemm_bias_relu_f32(const float *a, int64_t a_row, int64_t a_col, const float *b, float *c, int64_t m, int64_t k,
                       int64_t n, const float *bias, int relu)
{
    return xpnn_avx512 ? gemm_avx512(a, a_row, a_col, b, c, m, k, n, bias, relu) : -1;
}

/* The chunked conv without the im2col copy (native_igemm.h), float32 (conv_avx512_runs: whether they run here):
 * out (m, out_h, out_w, cout) = conv(x, w) (+ bias) (· scale + shift) (then max(·, 0) when relu; NULL vectors
 * skip their step), x the padded chunk (m, hp, wp, cin), w (fh·fw·cin, ldw) and the vectors (ldw) with zeros
 * past cout, ldw = cout rounded up to 16; and dwt
 * (cout, fh·fw·cin) = Σ over the chunk's pixels of grad · columns. Each returns 0, or -1 where it does not run
 * (no AVX-512F, xpnn_avx512 = 0, and for dwt fw·cin not a multiple of 16): the caller then copies columns. */
int conv_avx512_runs(void) { return xpnn_avx512 && gemm_takes(); }

int conv_gemm_f32(const float *x, const struct ConvGeometry *g, const float *w, int64_t ldw, const float *bias,
                  const float *scale, const float *shift, int relu, float *out)
{
    const struct ConvEpilogue e = {bias, scale, shift, relu};
    if ((scale == NULL) != (shift == NULL))
        return -1;
    return xpnn_avx512 ? conv_forward_avx512(x, g, w, ldw, &e, out) : -1;
}

int conv_weight_grad_f32(const float *x, const struct ConvGeometry *g, const float *grad, float *dwt)
{
    return xpnn_avx512 ? conv_weight_grad_avx512(x, g, grad, dwt) : -1;
}

/* dw (fh·fw·cin, cout) = Σ over the chunk's pixels of the columns' transpose · grad, for any fw·cin (the taps
 * broadcast, cout in vectors: native_igemm.h); -1 where it does not run (no AVX-512F, xpnn_avx512 = 0, cout not a
 * multiple of 16: the caller pads grad and dw with zero channels). */
int conv_weight_grad_taps_f32(const float *x, const struct ConvGeometry *g, const float *grad, float *dw)
{
    return xpnn_avx512 ? conv_weight_grad_taps_avx512(x, g, grad, dw) : -1;
}

/* dx (n, h, w, c) = col2im(grad (n, out_h, out_w, cout) · wt (cout, kh·kw·c)) over g's windows, without the
 * columns (native_igemm.h); -1 where it does not run (no AVX-512F, xpnn_avx512 = 0, c not a multiple of 16). */
int conv_input_grad_f32(const float *grad, const float *wt, const PoolGeometry *g, int64_t cout, float *dx)
{
    return xpnn_avx512 ? conv_input_grad_avx512(grad, wt, g, cout, dx) : -1;
}

/* setuptools builds every extension with an init function to export. The library is loaded with ctypes, not
 * imported, so the module is empty; without Python's headers the init only returns NULL (an import would then
 * raise SystemError), and the kernels still build. */
#if defined(__has_include)
#if __has_include(<Python.h>)
#define XPNN_HAVE_PYTHON_H
#endif
#endif
#ifdef XPNN_HAVE_PYTHON_H
#include <Python.h>
static struct PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_native",
                                           "xpnn's native CPU kernels, called through ctypes (xpnn.backends.native).",
                                           -1, NULL, NULL, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
#else
void *PyInit__native(void);
void *PyInit__native(void) { return NULL; }
#endif
