"""Gradient all-reduce between GPUs with NCCL (CuPy), its unique id broadcast over MPI.

Only the per-step gradient sum runs here; start-up broadcasts and per-epoch counts go through
`MPIComm` on host copies. The reduction is queued on the current stream, which is then polled
against the same deadline as MPI; on timeout the NCCL communicator is aborted and the silent
ranks are named. CuPy is imported when a `NCCLReducer` is made, never at module import.
"""

from __future__ import annotations

import time
from typing import Any

from xpnn.distributed.comm import NAP, SPINS, MPIComm


class NCCLReducer:
    """Sums CuPy buffers over all ranks in place with ncclAllReduce (one GPU per rank)."""

    def __init__(self, mpi: MPIComm) -> None:
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as exc:
            raise ValueError(
                f"distributed training on the cupy backend needs CuPy built with NCCL ({exc}); install "
                '`pip install -e ".[cuda12,mpi]"` and NCCL (`pip install nvidia-nccl-cu12`), or use XPNN_BACKEND=numpy.'
            ) from exc
        self.cupy, self.nccl, self.mpi = cupy, nccl, mpi
        world = mpi.world
        uid = mpi.bcast_object(nccl.get_unique_id() if world.is_root else None, "the NCCL unique-id broadcast")
        self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)
        self.types = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}

    def allreduce_sum(self, buf: Any, what: str) -> None:
        """Sum a contiguous CuPy buffer over all ranks, in place, bounded by the MPI timeout."""
        stream = self.cupy.cuda.get_current_stream()
        self.comm.allReduce(
            buf.data.ptr, buf.data.ptr, buf.size, self.types[buf.dtype.name], self.nccl.NCCL_SUM, stream.ptr
        )
        start, spins = time.monotonic(), 0
        while not stream.done:
            spins += 1
            if spins > SPINS:
                time.sleep(NAP)
            if time.monotonic() - start > self.mpi.timeout:
                self.comm.abort()
                raise self.mpi.missing_error(what)
