"""The training floor: the loop, `Callback`, and the built-in callbacks (progress, run folders,
checkpoints, stuck runs). It trains an `xpnn.model.Model`; `xpnn.distributed` plugs in as a `Strategy`.
"""

from xpnn.training.checkpoint import BackupAndRestore
from xpnn.training.loop import Batch, Callback, FitSettings, History, Strategy, TrainState, train_epochs
from xpnn.training.progress import ProgressBar, progress_callbacks
from xpnn.training.run_folder import Run, RunDir, run_callbacks
from xpnn.training.stuck import StuckDetector

__all__ = [
    "BackupAndRestore",
    "Batch",
    "Callback",
    "FitSettings",
    "History",
    "ProgressBar",
    "Run",
    "RunDir",
    "StuckDetector",
    "Strategy",
    "TrainState",
    "progress_callbacks",
    "run_callbacks",
    "train_epochs",
]
