"""The built-in callbacks under one name, as Keras's `keras.callbacks` (they live in `xpnn.training`)."""

from xpnn.training.checkpoint import BackupAndRestore
from xpnn.training.keras_callbacks import (
    CSVLogger,
    EarlyStopping,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
    read_weights,
    write_weights,
)
from xpnn.training.loop import Callback
from xpnn.training.progress import ProgressBar, progress_callbacks
from xpnn.training.stuck import StuckDetector

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "StuckDetector",
    "TerminateOnNaN",
    "progress_callbacks",
    "read_weights",
    "write_weights",
]
