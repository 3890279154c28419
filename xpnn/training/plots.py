"""run_stats.png: loss per epoch and train/validation accuracy (matplotlib, Agg, no pyplot).

The words are history.csv's (`loss`, `val_loss`, `accuracy`, `val_accuracy`), the title carries the run's
hyperparameters, epochs are whole numbers on the axis, and the chance level ln(classes) is drawn when the
number of classes is known, so that a run stuck at chance (cost 1.787-1.800 for SIGNS) does not look like
learning. Stuck and resumed epochs are marked with vertical lines.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xpnn.io import atomic_write
from xpnn.training.loop import History


def _matplotlib(what: str) -> tuple[Any, Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise ImportError(
            f"matplotlib is needed to draw {what}; install it with `pip install matplotlib` "
            "(or `pip install xpnn[cli]`)."
        ) from exc
    return Figure, FigureCanvasAgg, MaxNLocator


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_stats_title(title: str = "", hyperparameters: Mapping[str, Any] | None = None) -> str:
    """The figure's title: `title`, then `key=value` for each hyperparameter (floats as `%g`), one line each."""
    params = ", ".join(f"{k}={_format(v)}" for k, v in (hyperparameters or {}).items())
    return "\n".join(part for part in (title, params) if part)


def run_stats_figure(
    history: History,
    title: str = "",
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    classes: int | None = None,
    stuck_epochs: Sequence[int] = (),
    resumed_epochs: Sequence[int] = (),
) -> Any:
    """The run_stats figure as a `matplotlib.figure.Figure` (two axes: loss, accuracy), without saving it.

    `classes` > 1 draws the chance level ln(classes) on the loss axis (the cost of a uniform softmax), whose
    range then starts at 0, and 1/classes on the accuracy axis;
    `stuck_epochs` and `resumed_epochs` get a vertical line each on both axes.
    """
    Figure, FigureCanvasAgg, MaxNLocator = _matplotlib("run_stats.png")
    epochs = list(history.epoch)
    h = history.history
    fig = Figure(figsize=(10, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, acc_ax = fig.subplots(1, 2)
    panels = ((loss_ax, ("loss", "val_loss"), "loss"), (acc_ax, ("accuracy", "val_accuracy"), "accuracy"))
    for ax, keys, label in panels:
        for key in keys:
            if key in h:
                ax.plot(epochs[: len(h[key])], h[key], marker="o", markersize=3, label=key)
        ax.set(xlabel="epoch", ylabel=label, title=f"{label} per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if classes is not None and classes > 1:
        chance = math.log(classes)
        loss_ax.axhline(chance, color="grey", linestyle=":", label=f"chance ln({classes}) = {chance:.3f}")
        # From 0 up: a run frozen at chance is a flat line at the chance level, not a zoomed-in "curve".
        highest = max([chance] + [v for k in ("loss", "val_loss") for v in h.get(k, []) if math.isfinite(v)])
        loss_ax.set_ylim(0.0, highest * 1.08)
        acc_ax.axhline(1.0 / classes, color="grey", linestyle=":", label=f"chance 1/{classes}")
    acc_ax.set_ylim(0.0, 1.02)
    marks_styles = ((stuck_epochs, "tab:red", "--", "stuck"), (resumed_epochs, "tab:green", "-.", "resumed"))
    for marks, color, style, word in marks_styles:
        for i, epoch in enumerate(sorted(set(marks))):
            for ax in (loss_ax, acc_ax):
                ax.axvline(epoch, color=color, linestyle=style, alpha=0.7, label=word if i == 0 else None)
    for ax in (loss_ax, acc_ax):
        ax.legend(fontsize="small")
    text = run_stats_title(title, hyperparameters)
    if text:
        fig.suptitle(text)
    fig.tight_layout()
    return fig


def plot_run_stats(
    history: History,
    path: str | os.PathLike,
    title: str = "",
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    classes: int | None = None,
    stuck_epochs: Sequence[int] = (),
    resumed_epochs: Sequence[int] = (),
) -> Path:
    """Draw `run_stats_figure(...)` into a PNG at `path` (atomically); needs matplotlib.

    The keyword arguments are optional (older callers pass `history, path, title` only); see
    `run_stats_figure` for what each adds.
    """
    fig = run_stats_figure(
        history,
        title,
        hyperparameters=hyperparameters,
        classes=classes,
        stuck_epochs=stuck_epochs,
        resumed_epochs=resumed_epochs,
    )
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
