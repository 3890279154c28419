"""Minibatch orders: a seeded permutation per epoch ("random") or the data order ("sequential")."""

from __future__ import annotations

import numpy as np

from xpnn.registry import lookup

SHUFFLES = {"random": "random", "sequential": "sequential"}


def check_shuffle(shuffle: str | bool) -> str:
    """'random' or 'sequential' (True/False are accepted as the same)."""
    if isinstance(shuffle, bool):
        return "random" if shuffle else "sequential"
    return lookup("shuffle", shuffle, SHUFFLES)


def epoch_batches(n: int, batch_size: int, shuffle: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Index arrays for one epoch; the last partial batch is kept."""
    order = rng.permutation(n) if shuffle == "random" else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
