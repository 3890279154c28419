"""Errors xpnn raises beyond ValueError/TypeError."""

from __future__ import annotations


class DivergedError(FloatingPointError):
    """Training produced a non-finite cost; says where and what to try."""

    def __init__(self, epoch: int, step: int, cost: float) -> None:
        self.epoch, self.step, self.cost = epoch, step, cost
        super().__init__(
            f"the cost became {cost} at epoch {epoch}, step {step} (both counted from 1): training diverged. "
            "Lower the learning rate, check the inputs are scaled (e.g. images to [0, 1]), or try another seed."
        )


class ModelFileError(ValueError):
    """A model or checkpoint file that is damaged, corrupt (checksum), or unsafe to read; names the file."""


class RunInUseError(OSError):
    """Another process holds the run folder (xpnn.runlock); the message names its pid."""
