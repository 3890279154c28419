"""`ProgressBar`: one line per epoch on a terminal, redrawn a few times a second, never cut.

It shows the epoch, the step, a bar where there is room, and the running mean loss (batch costs
weighted by size, the figure `history["loss"]` ends on), read from the device at most every
`interval` seconds: no host synchronisation per step. At the epoch's end it prints the epoch's logs
in the loop's order (loss, metrics, val_*), wrapped onto a second line rather than cut when the
terminal is narrow.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

from xpnn.model import Model
from xpnn.training.loop import Batch, Callback, TrainState


def format_logs(logs: dict[str, float]) -> list[str]:
    """["loss 0.1234", "accuracy 0.5000", ..., "0.12 s"]: the logs in order, seconds last."""
    items = [f"{k} {v:.4f}" for k, v in logs.items() if k != "seconds"]
    if "seconds" in logs:
        items.append(f"{logs['seconds']:.2f} s")
    return items


def wrap_items(head: str, items: list[str], width: int) -> str:
    """`head` then the items separated by two spaces, broken onto indented lines before any would be cut."""
    lines, line = [], head
    for item in items:
        if len(line) + 2 + len(item) > width and line.strip():
            lines.append(line)
            line = " " * 4 + item
        else:
            line = f"{line}  {item}" if line else item
    lines.append(line)
    return "\n".join(lines)


class ProgressBar(Callback):
    """A progress line per epoch (Keras's verbose=1, `keras.callbacks.ProgbarLogger`), for terminals.

    `fit(verbose=1)` adds it on a tty. During an epoch it redraws every `interval` seconds with the running
    mean loss (one host read per redraw, never per step); at the epoch's end it prints the loss and every
    metric in full, wrapped to `width` (default: the terminal's columns).
    """

    root_only = True  # distributed runs: rank 0 alone prints

    def __init__(
        self, epochs: int, steps_per_epoch: int, file: TextIO | None = None, width: int | None = None,
        interval: float = 0.2,
    ) -> None:  # fmt: skip
        self.epochs, self.steps, self.file, self.width, self.interval = epochs, steps_per_epoch, file, width, interval
        self._last = 0.0
        self._drawn = 0

    def _columns(self) -> int:
        return self.width or shutil.get_terminal_size((80, 24)).columns

    def _write(self, text: str) -> None:
        out = self.file or sys.stdout
        out.write(text)
        out.flush()

    def on_epoch_begin(self, model: Model, state: TrainState) -> None:
        """Start the epoch's line."""
        self._last = time.perf_counter()  # the first redraw comes `interval` seconds in: a short epoch reads nothing
        self._drawn = 0

    def on_batch_end(self, model: Model, state: TrainState, batch: Batch) -> None:
        """Redraw the bar and the running mean loss when `interval` seconds have passed since the last one."""
        now = time.perf_counter()
        if now - self._last < self.interval or not batch.costs:
            return
        self._last = now
        loss = batch.mean_cost()  # the one host read, a few times a second
        head = f"epoch {batch.epoch}/{self.epochs}  {batch.index + 1}/{self.steps}"
        tail = f"loss {loss:.4f}"
        room = self._columns() - len(head) - len(tail) - 6
        bar = ""
        if room >= 5:
            done = int(room * (batch.index + 1) / max(self.steps, 1))
            bar = " [" + "=" * done + " " * (room - done) + "]"
        line = f"{head}{bar}  {tail}"[: self._columns() - 1]
        self._write("\r" + line.ljust(self._drawn))
        self._drawn = len(line)

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Finish the line with the epoch's logs, every name and value in full."""
        head = f"epoch {state.epoch}/{self.epochs}  {self.steps}/{self.steps}"
        text = wrap_items(head, format_logs(logs), self._columns() - 1)
        first, *rest = text.split("\n")
        self._write("\r" + first.ljust(self._drawn) + "".join("\n" + r for r in rest) + "\n")
        self._drawn = 0


def progress_callbacks(
    verbose: int, epochs: int, steps_per_epoch: int, stream: Any = None
) -> tuple[list[Callback], int]:
    """Callbacks and the loop's own `verbose` for fit's `verbose`: a progress line on a terminal, else plain lines.

    What Keras does with `fit(verbose=...)` by adding a `keras.callbacks.ProgbarLogger`: verbose=1 on a tty
    gives a `ProgressBar` (and the loop prints nothing itself); elsewhere the loop prints one line per epoch.
    """
    stream = stream or sys.stdout
    if verbose == 1 and stream.isatty():
        return [ProgressBar(epochs, steps_per_epoch, file=stream)], 0
    return [], verbose
