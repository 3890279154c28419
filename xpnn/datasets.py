"""Datasets: SIGNS from disk, and the embedded synthetic stand-in for machines without it."""

from xpnn.data.embedded import load_embedded
from xpnn.data.signs import find_signs, load_signs, locate_signs

__all__ = ["find_signs", "load_embedded", "load_signs", "locate_signs"]
