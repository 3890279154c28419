"""Name lookup for built-ins, with an error that lists the choices and the closest match."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(kind: str, name: str, table: Mapping[str, T]) -> T:
    """table[name] (case-insensitive), or a ValueError naming the unknown `kind` and the fix."""
    key = str(name).strip().lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, list(table), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(sorted(table))}.{hint}")
