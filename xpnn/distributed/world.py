"""The MPI world this process belongs to: rank, size, local rank (which GPU), and rank-0-only output.

mpi4py is imported here and only here, on first use, so `import xpnn.distributed` works without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# Variables that MPI launchers (MPICH/Intel hydra, Open MPI, PMIx, Slurm srun) set in each rank's environment.
LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_PROCID", "MPI_LOCALNRANKS")
LAUNCH_HINT = "mpiexec -n 2 python examples/train.py --distributed"
DEFAULT_TIMEOUT = 300.0  # seconds a rank waits in a collective before it names the missing ranks and aborts


class DistributedError(RuntimeError):
    """A rank failed, hung or disagreed; raised on the ranks that noticed, which then abort the job."""


@dataclass(frozen=True)
class World:
    """This process's place in the job: `rank` of `size`, `local_rank` among the ranks on its node.

    Horovod's `hvd.rank()`, `hvd.size()`, `hvd.local_rank()`; TF's `tf.distribute.cluster_resolver` task ids."""

    comm: Any  # mpi4py.MPI.Comm (COMM_WORLD)
    rank: int
    size: int
    local_rank: int
    local_size: int

    @property
    def is_root(self) -> bool:
        """True on rank 0."""
        return self.rank == 0


_world: World | None = None


def under_launcher() -> bool:
    """Whether an MPI launcher started this process (its environment variables are present)."""
    return any(name in os.environ for name in LAUNCHER_VARS)


def import_mpi() -> Any:
    """mpi4py's MPI module (initialises MPI), or a ValueError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ValueError(
            f"distributed training needs mpi4py and an MPI library ({exc}). Install them with "
            f'`pip install -e ".[mpi]"` (mpi4py + the mpich wheel, which provides mpiexec), then launch with '
            f"`{LAUNCH_HINT}`."
        ) from exc
    return MPI


def init() -> World:
    """Join the MPI world (once per process); refuses a single process that no launcher started.

    Horovod's `hvd.init()`; in TensorFlow, creating a `tf.distribute.MultiWorkerMirroredStrategy`.

    On the CuPy backend it also makes this rank's GPU current, so call it before building a model there.
    """
    global _world
    if _world is not None:
        return _world
    MPI = import_mpi()
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1 and not under_launcher():
        raise ValueError(
            "distributed training was asked for, but this process was not started by an MPI launcher "
            f"(world size 1, none of {', '.join(LAUNCHER_VARS)} set). Launch one process per rank, e.g. "
            f"`{LAUNCH_HINT}` (or srun), or train without distributed=True / --distributed."
        )
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    _world = World(comm, comm.Get_rank(), comm.Get_size(), node.Get_rank(), node.Get_size())
    node.Free()
    from xpnn.backends import get_backend

    if get_backend().name == "cupy":
        use_local_gpu(_world)
    else:
        share_cpu_threads(_world)
    return _world


def share_cpu_threads(world: World) -> int | None:
    """Give each rank on a node its share of the cores for BLAS, unless the user set a thread count.

    N ranks each running a BLAS with all cores oversubscribe the node (on 2 cores, 2 ranks ran 5x
    slower than with one thread each). xpnn's own CPU worker threads follow the BLAS count
    (`xpnn.cpu_threads`). Returns the count set.
    """
    if any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")):
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    threads = max(1, (os.cpu_count() or 1) // world.local_size)
    threadpool_limits(limits=threads, user_api="blas")
    return threads


def current() -> World | None:
    """The world if `init()` has run in this process, else None (plain single-process training)."""
    return _world


def is_root() -> bool:
    """True on rank 0, and in any process that never joined an MPI world."""
    return _world is None or _world.is_root


def root_print(*args: Any, **kwargs: Any) -> None:
    """`print` on rank 0 only, so N ranks write one log."""
    if is_root():
        print(*args, **kwargs)


def use_local_gpu(world: World) -> int:
    """Make GPU `local_rank % device_count` current for this rank (one GPU per rank); returns its id."""
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    if world.local_size > count:
        raise ValueError(
            f"{world.local_size} ranks share a node with {count} GPU(s); start at most one rank per GPU "
            f"(e.g. `mpiexec -n {count} ...`) or use XPNN_BACKEND=numpy."
        )
    device = world.local_rank % count
    cupy.cuda.Device(device).use()
    return device
