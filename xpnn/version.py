"""The installed xpnn version (one place, imported by writers that record it)."""

__version__ = "0.1.0"
