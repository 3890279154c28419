"""Check at start that every rank trains the same thing: model, data, batch size, seed, optimizer, loss.

Ranks that disagree would silently average unrelated gradients (or deadlock on different step
counts), so each rank describes its run, the descriptions are all-gathered, and every rank raises
the same ValueError naming the fields and ranks that differ from rank 0.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.model import Model
from xpnn.types import Array

FINGERPRINT_ROWS = 16  # samples hashed per array: catches different files or orders without reading all data


def data_fingerprint(a: Array) -> str:
    """Shape, dtype and a hash of up to FINGERPRINT_ROWS evenly spaced samples of `a` (host bytes)."""
    step = max(1, len(a) // FINGERPRINT_ROWS)
    sample = np.ascontiguousarray(get_backend().to_host(a[::step]))
    digest = hashlib.sha256(sample.tobytes()).hexdigest()[:16]
    return f"{tuple(a.shape)} {a.dtype} {digest}"


def describe_run(model: Model, x: Array, y: Array, settings: dict[str, Any]) -> dict[str, str]:
    """What must agree across ranks, as short strings: model, data and the fit settings."""
    layers = "; ".join(f"{layer!r} {[tuple(p.shape) for p in layer.params.values()]}" for layer in model.layers)
    out = {
        "backend": get_backend().name,
        "dtype": str(model.dtype),
        "layers": layers,
        "x": data_fingerprint(x),
        "y": data_fingerprint(y),
    }
    out.update({key: repr(value) for key, value in settings.items()})
    return out


def disagreements(descriptions: list[dict[str, str]]) -> list[str]:
    """One line per (field, rank) that differs from rank 0, e.g. "batch_size: rank 1 has 32, rank 0 has 64"."""
    root = descriptions[0]
    lines = []
    for key in root.keys() | {k for d in descriptions for k in d}:
        for rank, desc in enumerate(descriptions[1:], start=1):
            if desc.get(key) != root.get(key):
                lines.append(f"{key}: rank {rank} has {_short(desc.get(key))}, rank 0 has {_short(root.get(key))}")
    return sorted(lines)


def _short(text: str | None, limit: int = 80) -> str:
    text = "(missing)" if text is None else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_agreement(descriptions: list[dict[str, str]]) -> None:
    """Raise a ValueError listing what the ranks disagree on (the same on every rank), if anything."""
    lines = disagreements(descriptions)
    if lines:
        raise ValueError(
            f"the {len(descriptions)} ranks disagree on the training run, so their gradients cannot be averaged:\n  "
            + "\n  ".join(lines)
            + "\nStart every rank with the same script, arguments, data and seed (one mpiexec command)."
        )
