"""Collectives over MPI with a deadline: a rank that dies or hangs is named instead of waited on forever.

Each collective is non-blocking (Iallreduce, Ibcast, Iallgather) and polled until `timeout` seconds
pass. Then the waiting ranks say "alive" to each other on a side communicator for a short grace
period; whoever stays silent is named in a `DistributedError`, and the caller aborts the job.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np

from xpnn.distributed.world import DistributedError, World, import_mpi

ALIVE_TAG = 7031
SPINS = 2000  # tight polls before the wait starts sleeping (keeps small-step latency low)
NAP = 2e-4  # seconds between polls after that (leaves the core to other work)


class MPIComm:
    """Host (NumPy) collectives on COMM_WORLD, each bounded by `timeout` seconds."""

    def __init__(self, world: World, timeout: float) -> None:
        self.MPI = import_mpi()
        self.world = world
        self.comm = world.comm
        self.side = world.comm.Dup()  # the alive-probe traffic never mixes with training messages
        self.timeout = float(timeout)

    # ---- waiting -------------------------------------------------------------------------------
    def wait(self, request: Any, what: str) -> None:
        """Poll `request` until it completes, or raise a DistributedError naming the missing ranks."""
        start = time.monotonic()
        spins = 0
        while not request.Test():
            spins += 1
            if spins > SPINS:
                time.sleep(NAP)
            if time.monotonic() - start > self.timeout:
                raise self.missing_error(what)

    def missing_error(self, what: str) -> DistributedError:
        """Find which ranks are silent (alive probe on the side communicator) and describe them."""
        world, MPI = self.world, self.MPI
        others = [r for r in range(world.size) if r != world.rank]
        sends = [self.side.isend(world.rank, dest=r, tag=ALIVE_TAG) for r in others]
        heard: set[int] = set()
        status = MPI.Status()
        grace = min(self.timeout, 5.0)
        end = time.monotonic() + grace
        while time.monotonic() < end and len(heard) < len(others):
            if self.side.Iprobe(source=MPI.ANY_SOURCE, tag=ALIVE_TAG, status=status):
                heard.add(self.side.recv(source=status.Get_source(), tag=ALIVE_TAG))
            else:
                time.sleep(1e-3)
        del sends  # never completed on dead peers; the job aborts next
        missing = [r for r in others if r not in heard]
        if missing:
            who = f"rank {missing[0]}" if len(missing) == 1 else f"ranks {', '.join(map(str, missing))}"
            cause = f"{who} did not arrive (dead or hung)"
        else:
            cause = "every rank is alive but they are in different collectives (the ranks are out of step)"
        return DistributedError(
            f"rank {world.rank} of {world.size} waited {self.timeout:g} s at {what}: {cause}. "
            "Aborting the job. If steps are legitimately that slow, raise timeout= (or XPNN_DIST_TIMEOUT)."
        )

    # ---- collectives ---------------------------------------------------------------------------
    def allreduce_sum(self, buf: np.ndarray, what: str) -> None:
        """Sum a contiguous host buffer over all ranks, in place."""
        self.wait(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM), what)

    def bcast(self, buf: np.ndarray, what: str) -> None:
        """Overwrite a contiguous host buffer with rank 0's, in place."""
        self.wait(self.comm.Ibcast(buf, root=0), what)

    def bcast_object(self, obj: Any, what: str) -> Any:
        """Rank 0's picklable `obj` on every rank."""
        data = pickle.dumps(obj) if self.world.is_root else b""
        length = np.array([len(data)], dtype=np.int64)
        self.bcast(length, what)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.world.is_root else np.empty(length[0], np.uint8)
        self.bcast(buf, what)
        return pickle.loads(buf.tobytes())

    def allgather_object(self, obj: Any, what: str) -> list[Any]:
        """Every rank's picklable `obj`, in rank order, on every rank."""
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        lengths = np.empty(self.world.size, dtype=np.int64)
        self.wait(self.comm.Iallgather(np.array([data.size], dtype=np.int64), lengths), what)
        out = np.empty(int(lengths.sum()), dtype=np.uint8)
        self.wait(self.comm.Iallgatherv(data, [out, lengths]), what)
        cuts = np.concatenate([[0], np.cumsum(lengths)])
        return [pickle.loads(out[a:b].tobytes()) for a, b in zip(cuts[:-1], cuts[1:])]

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (MPI_Abort); a collective in flight cannot be cancelled otherwise."""
        self.comm.Abort(code)
