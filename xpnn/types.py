"""Type aliases shared by the public API."""

from __future__ import annotations

from typing import Any, Literal

Array = Any
"""A NumPy or CuPy ndarray: whichever the active backend holds."""

Padding = Literal["valid", "same"]
"""TensorFlow's padding names, in lower case ("VALID"/"SAME" are accepted too)."""

IntPair = int | tuple[int, int]
