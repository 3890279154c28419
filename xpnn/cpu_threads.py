"""Chunked loops on every core the CPU backend may use, with BLAS at one thread inside each worker.

NumPy runs copies, arg-maxes and gathers on one core; only BLAS uses more. The fused conv unit works
through a batch in cache-sized chunks, so its chunks can go to worker threads instead (NumPy releases the
GIL inside each call), each GEMM then running on its worker's core. The thread budget is the one the user
gave BLAS (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, threadpoolctl, or `xpnn.distributed`'s share per rank),
so xpnn never runs more threads than that; XPNN_CPU_THREADS overrides it. Which worker runs a chunk never
changes a result: chunks are fixed by size, not by the number of workers.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

_controller = None
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None  # (pid, workers): a forked child or a new budget gets a new pool


def _blas():
    """threadpoolctl's view of NumPy's BLAS, made once (finding the libraries costs ~0.3 ms)."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def cpu_workers() -> int:
    """Worker threads for chunked loops: XPNN_CPU_THREADS, else the BLAS thread count (1 if unknown)."""
    override = os.environ.get("XPNN_CPU_THREADS", "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            raise ValueError(f"XPNN_CPU_THREADS must be a positive integer; received {override!r}.")
        return int(override)
    infos = _blas().info()
    return max([info["num_threads"] for info in infos] or [1])


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool, _pool_key
    key = (os.getpid(), workers)
    if _pool is None or _pool_key != key:
        if _pool is not None and _pool_key[0] == key[0]:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(workers, thread_name_prefix="xpnn-cpu")
        _pool_key = key
    return _pool


def map_chunks(
    run_chunk: Callable[[int, int, int], None], n: int, chunk: int, workers: int = 1, blas: bool = True
) -> None:
    """Call run_chunk(start, stop, worker) for each chunk of range(n), spread over `workers` threads.

    Workers take the next chunk as they come free (a worker that wakes late takes fewer); each may keep
    its own scratch buffers by worker index. The calling thread is worker 0. With one worker (or one
    chunk) everything runs here; an exception in any worker is raised here once all have stopped. With
    `blas` every chunk runs BLAS at one thread, however many workers there are: OpenBLAS's bits can depend
    on its thread count (its Haswell sgemm kernels, e.g. under OPENBLAS_CORETYPE=Haswell, give a 4096×84 ·
    84×32 product other last bits at 2 threads than at 1), so a chunk's GEMM must not run at 2 threads in a
    one-worker call and at 1 in a two-worker one. Chunks that call no BLAS pass False and skip that switch
    (OpenBLAS takes ~0.1 ms to change its thread count and back).
    """
    starts = list(range(0, n, chunk))
    workers = min(workers, len(starts))
    if workers <= 1:
        with _blas().limit(limits=1) if blas else contextlib.nullcontext():
            for start in starts:
                run_chunk(start, min(n, start + chunk), 0)
        return

    taken = itertools.count()  # next() on it is atomic under the GIL: each chunk goes to one worker

    def work(worker: int) -> None:
        while (k := next(taken)) < len(starts):
            run_chunk(starts[k], min(n, starts[k] + chunk), worker)

    with _blas().limit(limits=1) if blas else contextlib.nullcontext():
        futures = [_executor(workers - 1).submit(work, w) for w in range(1, workers)]
        try:
            work(0)  # this thread is worker 0: one thread fewer to wake
        finally:
            for future in futures:
                future.result()


# A GEMM goes to the workers in blocks of about this many multiply-adds (~0.1 ms on one core); smaller ones run
# whole on the calling thread. Blocks are fixed by the shapes, never by the number of workers.
GEMM_BLOCK_MACS = 1 << 22
MIN_BLOCK = 64  # rows or columns: a narrower block repacks the other operand for little work (6 MLP-sized
# products: 16 → 64 took 7.05-7.77 → 6.10-6.90 ms)


def matmul(a, b, bias=None, relu: bool = False):
    """a @ b (then `+ bias` and max(·, 0) with `relu`) for 2-D arrays, on the NumPy backend in fixed blocks on every
    worker (BLAS at one thread each).

    OpenBLAS splits a GEMM statically over its threads, so its calling thread waits for a worker that the OS
    has not yet scheduled: on this busy 2-core VM the MLP's training step took 52 ms with BLAS at 2 threads and
    7.7 ms at 1. Workers that take blocks as they come free never wait for each other that way. Blocks split
    the larger of a's rows and b's columns, so each output value is one BLAS dot product over the whole inner
    dimension, the same whichever worker computes it. Small products run whole on the calling thread, BLAS at
    one thread too; CuPy gets one plain matmul. float32 products that native.c's AVX-512 GEMM takes (b's
    columns a multiple of 16, b contiguous) go to it in blocks of rows instead (`native.gemm`). Call it from
    layer math, not from inside a map_chunks worker (whose BLAS is at one thread already, and whose limit a
    nested one would undo).
    """
    from xpnn.backends import get_backend, native

    xp = get_backend().xp
    (m, k), n = a.shape, b.shape[1]
    if bias is not None or relu:
        # the epilogue in the native GEMM's registers (one pass over the output fewer each), else two NumPy passes
        out = _native_blocks(a, b, bias, relu) if get_backend().name == "numpy" else None
        if out is None:
            out = matmul(a, b)
            if bias is not None:
                out += bias
            if relu:
                xp.maximum(out, 0.0, out=out)
        return out
    if get_backend().name != "numpy":
        return a @ b
    if native.takes(a) and not b.flags.c_contiguous and m >= MIN_BLOCK:
        # e.g. Wᵀ of a Dense input gradient: a k·n copy lets the native GEMM take m·k·n (blocked: native_transpose.h)
        if m % 16 == 0 and b.T.flags.c_contiguous and m * (k + n) < k * n:
            return _transposed_product(a, b)
        copy = native.transposed_copy(b)
        b = xp.ascontiguousarray(b) if copy is None else copy
    out = _native_blocks(a, b, None, False)  # native.c's AVX-512 GEMM, where it takes these operands
    if out is not None:
        return out
    out = xp.empty((m, n), dtype=xp.result_type(a, b))
    if m * k * n < 2 * GEMM_BLOCK_MACS:
        with _blas().limit(limits=1):  # 6 µs; at 2 threads a 64×400 · 400×120 product took 92 ms here, busy
            return a @ b
    if m >= n:
        rows = max(MIN_BLOCK, GEMM_BLOCK_MACS // (k * n) // 16 * 16)

        def run_block(start: int, stop: int, worker: int) -> None:
            xp.matmul(a[start:stop], b, out=out[start:stop])

        map_chunks(run_block, m, rows, cpu_workers())
    else:
        cols = max(MIN_BLOCK, GEMM_BLOCK_MACS // (k * m) // 16 * 16)

        def run_block(start: int, stop: int, worker: int) -> None:
            out[:, start:stop] = a @ b[:, start:stop]

        map_chunks(run_block, n, cols, cpu_workers())
    return out


def _transposed_product(a, b):
    """a @ b as (bᵀ @ aᵀ)ᵀ for a transposed view b (bᵀ C-contiguous) and few rows in a: copies m·(k + n) values
    instead of b's k·n (the MLP's batch-64 input gradient: 64·1024 instead of 512·512). Each output is the native
    GEMM's in-order sum over k either way, a multiply-add per term, so the bits are a @ b's."""
    from xpnn.backends import get_backend, native

    xp = get_backend().xp
    a_t = native.transposed_copy(a.T)
    out_t = matmul(b.T, xp.ascontiguousarray(a.T) if a_t is None else a_t)
    out = native.transposed_copy(out_t.T)
    return xp.ascontiguousarray(out_t.T) if out is None else out


def _native_blocks(a, b, bias, relu: bool):
    """a @ b (+ bias, max(·, 0) with relu) by native.c's GEMM in row blocks on the workers; None where it does not
    take the operands (float32 on AVX-512, b C-contiguous with columns a multiple of 16)."""
    from xpnn.backends import get_backend, native

    xp = get_backend().xp
    (m, k), n = a.shape, b.shape[1]
    if not native.takes(a):
        return None
    if bias is not None:
        bias = xp.ascontiguousarray(bias)
    out = xp.empty((m, n), dtype=xp.result_type(a, b))
    if not native.gemm(a[:0], b, out[:0], bias, relu):
        return None
    workers = cpu_workers() if m * k * n >= 2 * GEMM_BLOCK_MACS else 1
    # whole 6- and 12-row register blocks, at most 4 per worker: each call costs ~10 µs of Python (43 blocks
    # of 12 rows made the MLP's 512×784 · 784×512 product 30 % slower than one call)
    rows = max(12, GEMM_BLOCK_MACS // (k * n) // 12 * 12, -(-m // (4 * workers * 12)) * 12)

    def run_native(start: int, stop: int, worker: int) -> None:
        native.gemm(a[start:stop], b, out[start:stop], bias, relu)

    map_chunks(run_native, m, rows, workers, blas=False)
    return out
