"""run_stats.png: loss per epoch and train/validation accuracy (matplotlib, Agg, no pyplot)."""

from __future__ import annotations

import os
from pathlib import Path

from xpnn.io import atomic_write
from xpnn.training.loop import History


def plot_run_stats(history: History, path: str | os.PathLike, title: str = "") -> Path:
    """Draw the cost and the accuracies per epoch into a PNG at `path` (atomically); needs matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            f"matplotlib is needed to draw {Path(path).name}; install it with `pip install matplotlib` "
            "(or `pip install xpnn[cli]`)."
        ) from exc
    epochs = history.epoch
    h = history.history
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    cost_ax, acc_ax = fig.subplots(1, 2)
    cost_ax.plot(epochs, h.get("loss", []), marker="o", label="train cost")
    if "val_loss" in h:
        cost_ax.plot(epochs, h["val_loss"], marker="o", label="test cost")
    cost_ax.set(xlabel="epoch", ylabel="cost", title="cost per epoch")
    cost_ax.legend()
    acc_ax.plot(epochs, h.get("accuracy", []), marker="o", label="train accuracy")
    if "val_accuracy" in h:
        acc_ax.plot(epochs, h["val_accuracy"], marker="o", label="test accuracy")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy per epoch", ylim=(0.0, 1.02))
    acc_ax.legend()
    for ax in (cost_ax, acc_ax):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
