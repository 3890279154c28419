"""Gradient all-reduce between GPUs with NCCL (CuPy), its unique id broadcast over MPI.

Only the per-step gradient sum runs here; start-up broadcasts and per-epoch counts go through
`MPIComm` on host copies. The reduction is queued on the current stream, which is then polled
against the same deadline as MPI; on timeout the NCCL communicator is aborted and the silent
ranks are named. CuPy is imported when a `NCCLReducer` is made, never at module import.

CuPy's `cupy.cuda.nccl` imports even without libnccl (it sets `available = False`), so that flag is checked
before any collective: every rank then fails at once with the fix, instead of rank 0 dying inside
`get_unique_id` while the others wait out the deadline. `ncclCommInitRank` blocks until every rank has
joined; it runs in a helper thread bounded by the same deadline.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from xpnn.distributed.comm import NAP, SPINS, MPIComm


class NCCLReducer:
    """Sums CuPy buffers over all ranks in place with ncclAllReduce (one GPU per rank)."""

    def __init__(self, mpi: MPIComm) -> None:
        self.cupy, self.nccl = load_nccl()
        self.mpi = mpi
        world = mpi.world
        uid = mpi.bcast_object(self.nccl.get_unique_id() if world.is_root else None, "the NCCL unique-id broadcast")
        self.comm = self._communicator(uid)
        self.types = {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64}

    def _communicator(self, uid: Any) -> Any:
        """`NcclCommunicator(size, uid, rank)` on this rank's GPU, or the named missing ranks after the deadline.

        It blocks until every rank has called it (CuPy releases the GIL meanwhile), so it runs in a daemon
        thread that first makes the caller's GPU current there (CUDA's current device is per thread). On
        timeout the thread is left blocked; the caller aborts the job.
        """
        world, device = self.mpi.world, self.cupy.cuda.runtime.getDevice()
        made: dict[str, Any] = {}

        def init() -> None:
            try:
                self.cupy.cuda.Device(device).use()
                made["comm"] = self.nccl.NcclCommunicator(world.size, uid, world.rank)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                made["error"] = exc

        thread = threading.Thread(target=init, name="xpnn-nccl-init", daemon=True)
        thread.start()
        thread.join(self.mpi.timeout)
        if thread.is_alive():
            raise self.mpi.missing_error("the NCCL communicator set-up (ncclCommInitRank)")
        if "error" in made:
            raise made["error"]
        return made["comm"]

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


def load_nccl() -> tuple[Any, Any]:
    """(cupy, cupy.cuda.nccl) with a working libnccl, or a ValueError that says what to install."""
    fix = (
        'install `pip install -e ".[cuda12-dist]"` (CuPy, MPI and NCCL as wheels; `cuda13-dist` for CUDA 13), '
        "or train on XPNN_BACKEND=numpy."
    )
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as exc:
        raise ValueError(f"distributed training on the cupy backend needs CuPy with NCCL ({exc}); {fix}") from exc
    if not getattr(nccl, "available", False):
        raise ValueError(
            "distributed training on the cupy backend needs NCCL, but CuPy found no libnccl "
            f"(cupy.cuda.nccl.available is False); {fix}"
        )
    return cupy, nccl
