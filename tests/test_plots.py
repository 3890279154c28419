"""run_stats.png checked through matplotlib's Figure objects (texts, ticks, lines), not screenshots."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("matplotlib")

from xpnn.training import History  # noqa: E402
from xpnn.training.plots import plot_run_stats, run_stats_figure, run_stats_title  # noqa: E402


def _history(epochs: int, loss: float = 1.79) -> History:
    h = History()
    for e in range(1, epochs + 1):
        h.append(e, {"loss": loss + 0.001 * e, "accuracy": 0.17, "val_loss": loss, "val_accuracy": 0.16})
    return h


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]


def test_words_are_history_csv_columns():
    fig = run_stats_figure(_history(3))
    loss_ax, acc_ax = fig.axes
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["loss", "val_loss"]
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == ["accuracy", "val_accuracy"]
    words = " ".join(_texts(fig)).lower()
    assert "cost" not in words and "test" not in words


def test_three_epochs_get_integer_ticks():
    fig = run_stats_figure(_history(3))
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_hyperparameters_in_title():
    params = {"optimizer": "Adam", "learning_rate": 0.009, "batch_size": 64, "seed": 1}
    fig = run_stats_figure(_history(2), "run 123", hyperparameters=params)
    title = fig._suptitle.get_text()
    assert title == run_stats_title("run 123", params)
    for piece in ("run 123", "optimizer=Adam", "learning_rate=0.009", "batch_size=64", "seed=1"):
        assert piece in title


def test_chance_level_drawn_when_classes_known():
    without = run_stats_figure(_history(4))
    assert not any("chance" in t for t in _texts(without))
    fig = run_stats_figure(_history(4), classes=6)
    loss_ax = fig.axes[0]
    chance = [line for line in loss_ax.get_lines() if line.get_label().startswith("chance")]
    assert len(chance) == 1
    assert chance[0].get_ydata()[0] == pytest.approx(math.log(6))
    assert "ln(6)" in chance[0].get_label()


def test_stuck_and_resumed_epochs_marked():
    fig = run_stats_figure(_history(6), classes=6, stuck_epochs=[4], resumed_epochs=[2, 5])
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines()]
        assert labels.count("stuck") == 1 and labels.count("resumed") == 1
        xs = sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() in ("--", "-."))
        assert xs == [2, 4, 5]


def test_old_signature_still_writes_png(tmp_path):
    out = plot_run_stats(_history(2), tmp_path / "run_stats.png", "run x")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stuck_run_axis_starts_at_zero_when_classes_known():
    fig = run_stats_figure(_history(5, loss=1.787), classes=6)
    low, high = fig.axes[0].get_ylim()
    assert low == 0.0 and high > math.log(6)
