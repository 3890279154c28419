/* A cache-blocked transpose (included by native.c once per type, like native_pool.h).
 *
 * dst (cols, rows) = srcᵀ for a C-contiguous src (rows, cols): what the native GEMM needs of a transposed
 * operand (a Dense input gradient's Wᵀ), whose rows it reads 16 values at a time. NumPy's copy of a transposed
 * view walks one of the two arrays a column at a time (0.34 ms for 512×512 float32 here); 32×32 tiles keep
 * both in cache. Values are copied, never computed: the bits of numpy.ascontiguousarray(src.T). */

#ifndef TRANSPOSE_TILE
#define TRANSPOSE_TILE 32
#endif

CLONES void NAME(transpose)(const T *src, int64_t rows, int64_t cols, T *dst)
{
    for (int64_t i0 = 0; i0 < rows; i0 += TRANSPOSE_TILE)
        for (int64_t j0 = 0; j0 < cols; j0 += TRANSPOSE_TILE) {
            const int64_t i1 = i0 + TRANSPOSE_TILE < rows ? i0 + TRANSPOSE_TILE : rows;
            const int64_t j1 = j0 + TRANSPOSE_TILE < cols ? j0 + TRANSPOSE_TILE : cols;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t i = i0; i < i1; i++)
                    dst[j * rows + i] = src[i * cols + j];
        }
}
