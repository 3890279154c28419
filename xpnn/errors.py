"""Errors xpnn raises beyond ValueError/TypeError."""

from __future__ import annotations


class DivergedError(FloatingPointError):
    """Training produced a non-finite cost (or weight, or validation loss); says where and what to try.

    Keras only stops on a NaN loss when asked (`keras.callbacks.TerminateOnNaN`) and names no step; xpnn
    always stops, restores the epoch's starting weights and raises this."""

    def __init__(self, epoch: int, step: int, cost: float, what: str = "the cost") -> None:
        self.epoch, self.step, self.cost, self.what = epoch, step, cost, what
        value = f"became {cost}" if what == "the cost" or cost == cost else "became non-finite"
        super().__init__(
            f"{what} {value} at epoch {epoch}, step {step} (both counted from 1): training diverged. "
            "Lower the learning rate, check the inputs are scaled (e.g. images to [0, 1]), or try another seed."
        )


class ModelFileError(ValueError):
    """A model or checkpoint file that is damaged, corrupt (checksum), or unsafe to read; names the file."""


class RunInUseError(OSError):
    """Another process holds the run folder (xpnn.runlock); the message names its pid."""
