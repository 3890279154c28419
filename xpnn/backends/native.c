/* Native CPU kernels for the fused Conv2D -> ReLU -> MaxPool2D unit (xpnn/layers/fused.py).
 *
 * The NumPy twin is ConvReluPool's im2col + GEMM path: these loops compute the same window maxima,
 * first arg-maxima and gradients, but never write the conv output to memory. Each pool window's
 * conv outputs are summed in registers and reduced to their max on the spot, which is what makes
 * the small-channel reference conv (cin 3, cout 8) several times cheaper than an im2col GEMM whose
 * rows are 48 values long. xpnn/backends/native.py loads this library with ctypes (calls release the
 * GIL, so xpnn's chunk workers run them side by side); the module init below only makes it a valid
 * extension module for setuptools.
 *
 * Layouts are TensorFlow's: images (n, h, w, cin), kernels (fh, fw, cin, cout), pooled (n, out_h, out_w, cout).
 * Sums run in the order (kernel row, kernel column, input channel), each with one multiply-add.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* One build runs well on every x86-64: GCC compiles the hot loops for AVX-512, AVX2+FMA and the baseline
 * and picks one when the library loads. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

#define CELLS 4 /* conv outputs of one window row computed together: each weight load feeds 4 multiply-adds */

typedef struct {
    int64_t n, h, w, cin;      /* the input images */
    int64_t top, left, hp, wp; /* SAME/VALID padding: the padded image is (hp, wp, cin), the input at (top, left) */
    int64_t fh, fw, cout;      /* the kernel */
    int64_t sh, sw;            /* conv strides */
    int64_t ph, pw;            /* pool window, equal to the pool stride; the windows tile the conv output */
    int64_t out_h, out_w;      /* pooled output */
} Geometry;

typedef float vf32 __attribute__((vector_size(32)));
typedef int32_t vi32 __attribute__((vector_size(32)));
typedef double vf64 __attribute__((vector_size(32)));
typedef int64_t vi64 __attribute__((vector_size(32)));

/* FORWARD(SUFFIX, T, V, VI, INT, LANES): pooled = window max of conv(x, w), argmax = its first row-major cell.
 * `w_lanes` is the kernel with cout padded by zeros to a multiple of LANES. NaN wins as in numpy.argmax. */
#define FORWARD(SUFFIX, T, V, VI, INT, LANES)                                                                     \
    static void pad_image_##SUFFIX(const T *x, T *img, const Geometry *g)                                    \
    {                                                                                                        \
        for (int64_t y = 0; y < g->h; y++)                                                                   \
            memcpy(img + ((y + g->top) * g->wp + g->left) * g->cin, x + y * g->w * g->cin,                   \
                   (size_t)(g->w * g->cin) * sizeof(T));                                                     \
    }                                                                                                        \
                                                                                                             \
    CLONES int conv_relu_pool_forward_##SUFFIX(const T *x, const T *w_lanes, const Geometry *g, T *pooled,   \
                                               int64_t *argmax)                                              \
    {                                                                                                        \
        const int64_t cl = (g->cout + LANES - 1) / LANES * LANES, taps = g->fw * g->cin;                     \
        const int64_t row_len = g->wp * g->cin, step = g->sw * g->cin;                                       \
        T *img = calloc((size_t)(g->hp * row_len), sizeof(T)); /* borders stay zero */                      \
        if (!img)                                                                                            \
            return -1;                                                                                       \
        for (int64_t b = 0; b < g->n; b++) {                                                                 \
            pad_image_##SUFFIX(x + b * g->h * g->w * g->cin, img, g);                                        \
            for (int64_t i = 0; i < g->out_h; i++)                                                           \
                for (int64_t j = 0; j < g->out_w; j++)                                                       \
                    for (int64_t co = 0; co < cl; co += LANES) {                                             \
                        V best = {0};                                                                        \
                        VI arg = {0};                                                                        \
                        for (int64_t r = 0; r < g->ph; r++)                                                  \
                            for (int64_t c = 0; c < g->pw; c += CELLS) {                                     \
                                const int64_t cells = g->pw - c < CELLS ? g->pw - c : CELLS;                 \
                                const T *corner = img + (i * g->ph + r) * g->sh * row_len +                  \
                                                  (j * g->pw + c) * step;                                    \
                                V acc[CELLS];                                                                \
                                for (int q = 0; q < CELLS; q++)                                              \
                                    acc[q] = (V){0};                                                         \
                                for (int64_t dy = 0; dy < g->fh; dy++) {                                     \
                                    const T *row = corner + dy * row_len;                                    \
                                    const T *wrow = w_lanes + dy * taps * cl + co;                           \
                                    if (cells == CELLS) {                                                    \
                                        for (int64_t t = 0; t < taps; t++) {                                 \
                                            V wv;                                                            \
                                            memcpy(&wv, wrow + t * cl, sizeof wv);                           \
                                            for (int q = 0; q < CELLS; q++)                                  \
                                                acc[q] += row[q * step + t] * wv;                            \
                                        }                                                                    \
                                    } else {                                                                 \
                                        for (int64_t t = 0; t < taps; t++) {                                 \
                                            V wv;                                                            \
                                            memcpy(&wv, wrow + t * cl, sizeof wv);                           \
                                            for (int q = 0; q < cells; q++)                                  \
                                                acc[q] += row[q * step + t] * wv;                            \
                                        }                                                                    \
                                    }                                                                        \
                                }                                                                            \
                                for (int q = 0; q < cells; q++) {                                            \
                                    const int64_t cell = r * g->pw + c + q;                                  \
                                    if (cell == 0) {                                                         \
                                        best = acc[0];                                                       \
                                        continue;                                                            \
                                    }                                                                        \
                                    VI wins = (acc[q] > best) | ((acc[q] != acc[q]) & (best == best));       \
                                    best = (V)(((VI)acc[q] & wins) | ((VI)best & ~wins));                    \
                                    arg = (((VI){0} + (INT)cell) & wins) | (arg & ~wins);                         \
                                }                                                                            \
                            }                                                                                \
                        const int64_t at = ((b * g->out_h + i) * g->out_w + j) * g->cout + co;               \
                        for (int64_t k = 0; k < LANES && co + k < g->cout; k++) {                            \
                            pooled[at + k] = best[k];                                                        \
                            argmax[at + k] = arg[k];                                                         \
                        }                                                                                    \
                    }                                                                                        \
        }                                                                                                    \
        free(img);                                                                                           \
        return 0;                                                                                            \
    }

/* BACKWARD(SUFFIX, T): each window winner's patch times its gradient, added into dw_t (cout, fh*fw*cin);
 * with dx non-NULL, the gradient times the kernel w_t (cout, fh*fw*cin) added back over the winner's
 * window, cropped to (n, h, w, cin). Transposed kernels keep each winner's update contiguous. */
#define BACKWARD(SUFFIX, T)                                                                                  \
    CLONES int conv_relu_pool_backward_##SUFFIX(const T *x, const T *w_t, const Geometry *g,                 \
                                                const int64_t *argmax, const T *grad, T *dw_t, T *dx)        \
    {                                                                                                        \
        const int64_t taps = g->fw * g->cin, k_len = g->fh * taps, row_len = g->wp * g->cin;                 \
        const size_t img_len = (size_t)(g->hp * row_len);                                                   \
        T *img = calloc(img_len, sizeof(T));                                                                 \
        T *dimg = dx ? malloc(img_len * sizeof(T)) : NULL;                                                   \
        int64_t *cell_at = malloc((size_t)(g->ph * g->pw) * sizeof(int64_t)); /* window cell -> patch offset */ \
        if (!img || (dx && !dimg) || !cell_at) {                                                             \
            free(img);                                                                                       \
            free(dimg);                                                                                      \
            free(cell_at);                                                                                   \
            return -1;                                                                                       \
        }                                                                                                    \
        for (int64_t r = 0; r < g->ph; r++) /* a table instead of two integer divisions per winner */         \
            for (int64_t c = 0; c < g->pw; c++)                                                              \
                cell_at[r * g->pw + c] = r * g->sh * row_len + c * g->sw * g->cin;                           \
        for (int64_t b = 0; b < g->n; b++) {                                                                 \
            pad_image_##SUFFIX(x + b * g->h * g->w * g->cin, img, g);                                        \
            if (dimg)                                                                                        \
                memset(dimg, 0, img_len * sizeof(T));                                                        \
            for (int64_t i = 0; i < g->out_h; i++)                                                           \
                for (int64_t j = 0; j < g->out_w; j++)                                                       \
                    for (int64_t co = 0; co < g->cout; co++) {                                               \
                        const int64_t at = ((b * g->out_h + i) * g->out_w + j) * g->cout + co;               \
                        const T gv = grad[at];                                                               \
                        if (gv == 0) /* a dead ReLU or a zero gradient adds nothing */                       \
                            continue;                                                                        \
                        const int64_t corner = i * g->ph * g->sh * row_len + j * g->pw * g->sw * g->cin +    \
                                               cell_at[argmax[at]];                                          \
                        T *dw_c = dw_t + co * k_len;                                                         \
                        const T *w_c = w_t + co * k_len;                                                     \
                        for (int64_t dy = 0; dy < g->fh; dy++) {                                             \
                            const T *patch = img + corner + dy * row_len;                                    \
                            T *dw_row = dw_c + dy * taps;                                                    \
                            for (int64_t t = 0; t < taps; t++)                                               \
                                dw_row[t] += gv * patch[t];                                                  \
                            if (dimg) {                                                                      \
                                T *dpatch = dimg + corner + dy * row_len;                                    \
                                const T *w_row = w_c + dy * taps;                                            \
                                for (int64_t t = 0; t < taps; t++)                                           \
                                    dpatch[t] += gv * w_row[t];                                              \
                            }                                                                                \
                        }                                                                                    \
                    }                                                                                        \
            if (dimg)                                                                                        \
                for (int64_t y = 0; y < g->h; y++)                                                           \
                    memcpy(dx + (b * g->h + y) * g->w * g->cin, dimg + ((y + g->top) * g->wp + g->left) * g->cin, \
                           (size_t)(g->w * g->cin) * sizeof(T));                                             \
        }                                                                                                    \
        free(img);                                                                                           \
        free(dimg);                                                                                          \
        free(cell_at);                                                                                       \
        return 0;                                                                                            \
    }

FORWARD(f32, float, vf32, vi32, int32_t, 8)
FORWARD(f64, double, vf64, vi64, int64_t, 4)
BACKWARD(f32, float)
BACKWARD(f64, double)

static struct PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_native",
                                           "xpnn's native CPU kernels, called through ctypes (xpnn.backends.native).",
                                           -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
