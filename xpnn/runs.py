"""Moved to `xpnn.training.run_folder` (run folders) and `xpnn.training.checkpoint` (their checkpoints);
this name stays for code that imports it."""

from xpnn.training.checkpoint import UNCHECKED_KEYS, config_differences, fingerprint, run_config
from xpnn.training.run_folder import (
    CHECKPOINT,
    CONFIG,
    EVENTS,
    HISTORY,
    HISTORY_COLUMNS,
    INITIAL,
    KILL_ENV,
    MODEL,
    PLOT,
    RUN_FORMAT,
    STATUS,
    Run,
    RunDir,
    history_csv,
    new_run_id,
    read_config,
    read_history_csv,
    run_callbacks,
    versions,
    write_text,
)

__all__ = [
    "CHECKPOINT", "CONFIG", "EVENTS", "HISTORY", "HISTORY_COLUMNS", "INITIAL", "KILL_ENV", "MODEL", "PLOT",
    "RUN_FORMAT", "STATUS", "UNCHECKED_KEYS", "Run", "RunDir", "config_differences", "fingerprint", "history_csv",
    "new_run_id", "read_config", "read_history_csv", "run_callbacks", "run_config", "versions", "write_text",
]  # fmt: skip
