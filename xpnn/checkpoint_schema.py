"""What a model file's or checkpoint's attributes must hold, checked before anything acts on them.

Pure functions over values already read from a file: each returns the checked value or raises one
`ValueError` line naming the file (`where`) and what is wrong. They bound what a tampered file can make
xpnn do: JSON text is size- and depth-capped before it is parsed (a 100,000-deep array would otherwise
end in RecursionError), and a random generator is rebuilt only from numpy's own bit generators (a state
naming "seed" would otherwise call `np.random.seed`). Keras keeps no such state in its files; TF's
checkpoints keep the generator as a tensor (`tf.random.Generator` state), never as a class name.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import numpy as np

MAX_JSON_BYTES = 1 << 20  # architecture, optimizer config, RNG state: KiB in practice
MAX_HISTORY_BYTES = 64 << 20  # a long run's history: about 100 bytes an epoch
MAX_JSON_DEPTH = 64  # xpnn writes depth 4 at most

BIT_GENERATORS = ("PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = str.maketrans({"[": "(", "{": "(", "]": ")", "}": ")"})


def _json_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text (brackets inside strings ignored), without recursion."""
    brackets = _STRING.sub("", text).translate(_BRACKETS)
    steps = (1 if c == "(" else -1 for c in brackets if c in "()")
    return max(accumulate(steps, initial=0))


def parse_json_attr(raw: Any, what: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`raw` (a str or bytes attribute) parsed as JSON, refused when too large or too deeply nested.

    `what` names the file and the attribute, e.g. "runs/x/checkpoint.h5: train_state.history".
    """
    if isinstance(raw, np.ndarray) and raw.shape == ():
        raw = raw.item()
    if isinstance(raw, (bytes, np.bytes_)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{what} is not UTF-8 text; the file is damaged or was not written by xpnn.") from None
    if not isinstance(raw, str):
        raise ValueError(f"{what} must be JSON text; got a {type(raw).__name__}. The file was not written by xpnn.")
    if len(raw) > max_bytes:
        raise ValueError(f"{what} is {len(raw)} characters of JSON, more than the {max_bytes} xpnn reads; refused.")
    depth = _json_depth(raw)
    if depth > max_depth:
        raise ValueError(f"{what} nests JSON {depth} levels deep (xpnn reads at most {max_depth}); refused.")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON ({exc}); the file is damaged.") from None


def check_format_version(obj: Any, where: str, newest: int) -> int:
    """A file's format_version as an int in [1, newest]. Every xpnn file has one, so a missing one is damage
    (it is not read as "old": that would let a damaged or stripped format 2 file skip its checksum)."""
    if obj is None:
        raise ValueError(f"{where} has no format_version attribute; the file is damaged.")
    if isinstance(obj, np.ndarray) and obj.shape == ():
        obj = obj.item()
    if isinstance(obj, (bool, np.bool_)) or not isinstance(obj, (int, np.integer)):
        raise ValueError(f"{where}: format_version must be an integer; got {obj!r}. The file is damaged.")
    version = int(obj)
    if version < 1:
        raise ValueError(f"{where}: format_version {version} is not one xpnn ever wrote; the file is damaged.")
    if version > newest:
        raise ValueError(
            f"{where} uses xpnn model format {version}, newer than this xpnn reads ({newest}); upgrade xpnn."
        )
    return version


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def rng_from_state(obj: Any, where: str = "checkpoint") -> np.random.Generator:
    """A `np.random.Generator` from a saved `bit_generator.state`, only for numpy's own bit generators.

    The state must be a table naming one of PCG64, PCG64DXSM, Philox, SFC64 or MT19937 with that
    generator's fields; numpy then checks the values themselves (`bit_generator.state = ...`).
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: the RNG state must be a table; got {type(obj).__name__}.")
    name = obj.get("bit_generator")
    if name not in BIT_GENERATORS:
        raise ValueError(
            f"{where}: the RNG state names bit generator {name!r}; only {', '.join(BIT_GENERATORS)} are allowed."
        )
    bit_generator = getattr(np.random, name)()
    expected = bit_generator.state
    if set(obj) != set(expected):
        raise ValueError(f"{where}: the {name} RNG state must hold exactly {sorted(expected)}; got {sorted(obj)}.")
    for key, value in expected.items():
        if isinstance(value, dict) and (not isinstance(obj[key], dict) or set(obj[key]) != set(value)):
            raise ValueError(f"{where}: the {name} RNG state's {key!r} must be a table with {sorted(value)}.")
    try:
        bit_generator.state = obj
    except (TypeError, ValueError, OverflowError, KeyError) as exc:
        raise ValueError(f"{where}: the {name} RNG state is not valid ({exc}).") from None
    return np.random.Generator(bit_generator)


def check_history(obj: Any, where: str = "checkpoint") -> dict[str, Any]:
    """A saved training history: {"history": {metric: [numbers]}, "epoch": [ints]}, lists of one length.

    Values may be NaN (a diverged epoch is recorded as it was); anything that is not a number is refused.
    """
    if not isinstance(obj, dict) or set(obj) != {"history", "epoch"}:
        raise ValueError(f"{where}: the history must be a table with 'history' and 'epoch'; got {_brief(obj)}.")
    epochs, metrics = obj["epoch"], obj["history"]
    if not isinstance(epochs, list) or not all(_is_count(e) for e in epochs):
        raise ValueError(f"{where}: the history's 'epoch' must be a list of epoch numbers; got {_brief(epochs)}.")
    if not isinstance(metrics, dict):
        raise ValueError(f"{where}: the history's 'history' must be a table of metric lists; got {_brief(metrics)}.")
    for key, values in metrics.items():
        if not isinstance(values, list) or not all(_is_number(v) for v in values):
            raise ValueError(f"{where}: the history's {key!r} must be a list of numbers; got {_brief(values)}.")
        if len(values) > len(epochs):
            raise ValueError(f"{where}: the history's {key!r} has {len(values)} values for {len(epochs)} epochs.")
    return obj


def check_counter(obj: Any, what: str, where: str = "checkpoint") -> int:
    """A saved epoch or step: a non-negative integer."""
    if isinstance(obj, np.ndarray) and obj.shape == ():
        obj = obj.item()
    if isinstance(obj, np.integer):
        obj = int(obj)
    if not _is_count(obj):
        raise ValueError(f"{where}: {what} must be a non-negative integer; got {obj!r}.")
    return obj


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
