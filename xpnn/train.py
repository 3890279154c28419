"""Moved to `xpnn.training.loop`; this name stays for code that imports it."""

from xpnn.training.loop import Batch, Callback, FitSettings, History, Strategy, TrainState, train_epochs

__all__ = ["Batch", "Callback", "FitSettings", "History", "Strategy", "TrainState", "train_epochs"]
