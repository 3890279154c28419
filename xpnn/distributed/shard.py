"""Split each global minibatch between ranks so that their union is exactly the single-process batch.

Every rank draws the same permutation (same seed, same RNG state), cuts it into the same global
batches, and keeps its contiguous slice of each; the first `b % size` ranks get one sample more.
"""

from __future__ import annotations

import numpy as np


def shard_bounds(batch: int, rank: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank `rank`'s slice of a global batch of `batch` samples (sizes differ by at most 1)."""
    base, extra = divmod(batch, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(indices: np.ndarray, rank: int, size: int) -> np.ndarray:
    """Rank `rank`'s part of one global batch of sample indices."""
    start, stop = shard_bounds(len(indices), rank, size)
    return indices[start:stop]


def describe_split(batch_size: int, size: int) -> str | None:
    """A one-line note when `batch_size` does not divide evenly over `size` ranks, else None."""
    base, extra = divmod(batch_size, size)
    if extra == 0:
        return None
    if base == 0:
        return (
            f"batch_size {batch_size} is smaller than the {size} ranks: {size - extra} rank(s) get no samples "
            f"each step and only wait. Use batch_size >= {size} (a multiple of {size} keeps the ranks busy equally)."
        )
    return (
        f"batch_size {batch_size} does not divide over {size} ranks: {extra} rank(s) take {base + 1} samples "
        f"and {size - extra} take {base} per step (gradients are weighted, so results still equal one process). "
        f"Use a multiple of {size}, e.g. {batch_size - extra} or {batch_size - extra + size}, to balance the ranks."
    )
