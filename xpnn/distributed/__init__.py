"""Data-parallel training over MPI (NumPy arrays) and NCCL (CuPy arrays) that equals one process.

    mpiexec -n 4 python examples/train.py --distributed
    model.fit(x, y, batch_size=64, distributed=True)       # 64 is the global batch, split over the ranks
    xpnn.distributed.wrap(model, timeout=60).fit(x, y)     # the same, with a 60 s collective deadline

Importing this package needs neither mpi4py nor CuPy; `init()` (or the first distributed fit) does.
"""

from xpnn.distributed.parallel import DataParallel, DistributedModel, as_data_parallel, wrap
from xpnn.distributed.shard import describe_split, shard, shard_bounds
from xpnn.distributed.world import DistributedError, World, current, init, is_root, root_print

__all__ = [
    "DataParallel",
    "DistributedError",
    "DistributedModel",
    "World",
    "as_data_parallel",
    "current",
    "describe_split",
    "init",
    "is_root",
    "root_print",
    "shard",
    "shard_bounds",
    "wrap",
]
