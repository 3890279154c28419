"""The built-in callbacks, under one name (Keras's `keras.callbacks`): they live in `xpnn.training`."""

from xpnn.training.checkpoint import BackupAndRestore
from xpnn.training.loop import Callback
from xpnn.training.progress import ProgressBar, progress_callbacks
from xpnn.training.stuck import StuckDetector

__all__ = ["BackupAndRestore", "Callback", "ProgressBar", "StuckDetector", "progress_callbacks"]
