"""Run folders: `runs/<run id>/` with config.json, history.csv, checkpoint.h5, model.h5 and run_stats.png.

A checkpoint after every epoch holds the weights, the optimizer's moments and step, the batch-order RNG
state, the epoch and the history, so a run killed at any point continues bit-identically from its last
checkpoint (`fit(..., run_dir=path, resume=True)` or `xpnn train --resume runs/<id>`). Every file is
replaced atomically; a new checkpoint replaces the old one only once it is on disk.
"""

from __future__ import annotations

import csv
import io as _io
import json
import os
import platform
import secrets
import signal
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xpnn.errors import DivergedError
from xpnn.io import atomic_write, save_model
from xpnn.model import Model
from xpnn.runlock import RunLock
from xpnn.training.checkpoint import (
    CHECKPOINT_FORMAT,
    config_differences,
    restore_checkpoint,
    run_config,
    stored_config,
    write_checkpoint,
)
from xpnn.training.loop import Batch, Callback, History, TrainState
from xpnn.training.stuck import StuckDetector
from xpnn.version import __version__

CONFIG, HISTORY, CHECKPOINT, MODEL = "config.json", "history.csv", "checkpoint.h5", "model.h5"
INITIAL, PLOT, STATUS, EVENTS = "initial.h5", "run_stats.png", "status.json", "events.log"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
RUN_FORMAT = CHECKPOINT_FORMAT
KILL_ENV = "XPNN_TEST_KILL"  # test hook: "step:N" or "checkpoint:E" SIGKILLs the process there


def new_run_id(now: datetime | None = None) -> str:
    """A unique id that sorts by start time (UTC): 20261125-031500-123456-ab12."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S-%f}-{secrets.token_hex(2)}"


@dataclass
class RunDir:
    """How `fit` keeps a run: `RunDir("runs/")` starts `runs/<run id>/`; `RunDir(folder, resume=True)` continues one.

    `data` says how to load the data again (the CLI records its source there); `extra` adds config keys;
    `stop_when_stuck` ends the run when the stuck check fires (it is always reported).
    """

    path: str | os.PathLike
    resume: bool = False
    data: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    stop_when_stuck: bool = False
    plot: bool = True
    folder: Path | None = None  # filled in by fit: the run's own folder


def _kill_point(point: str) -> None:
    """SIGKILL this process at `point` when XPNN_TEST_KILL names it (the resume tests' way to crash for real)."""
    if os.environ.get(KILL_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def versions() -> dict[str, str]:
    """The versions config.json records: xpnn, Python, NumPy, h5py and the platform."""
    return {
        "xpnn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "platform": platform.platform(),
    }


def write_text(path: Path, text: str) -> None:
    """Replace a small text file atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def history_csv(history: History) -> str:
    """history.csv's text: one row per epoch, the columns of HISTORY_COLUMNS (empty where not logged).

    What Keras's `keras.callbacks.CSVLogger` writes during a run; a run folder always keeps it.
    """
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for i, epoch in enumerate(history.epoch):
        row = [epoch]
        for key in HISTORY_COLUMNS[1:]:
            values = history.history.get(key)
            row.append(repr(values[i]) if values is not None and i < len(values) else "")
        writer.writerow(row)
    return buf.getvalue()


def read_history_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """history.csv as a list of {column: float} rows (empty cells left out)."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A run folder's config.json, with errors that say what the folder lacks."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"no run folder at {path}; list runs with `xpnn runs` (default folder runs/).")
    file = path / CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (it has no {CONFIG}); pass a folder made by a run.")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); restore it or start a new run.") from None
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        raise ValueError(f"{file} is not an xpnn run config (format != '{RUN_FORMAT}').")
    return config


class Run(Callback):
    """The `Callback` that keeps a run folder: config at the start, a checkpoint and history.csv after each
    epoch, model.h5 and run_stats.png at the end, status.json and events.log throughout.

    On `fit`'s start it creates `<path>/<run id>/`, or with `RunDir(folder, resume=True)` checks the fit is
    the run's own and restores its last checkpoint (the format and checks of `xpnn.training.checkpoint`).
    While it runs it holds the folder's lock (`xpnn.runlock`). Keras has no run folder: it is
    `BackupAndRestore`, `CSVLogger` and `ModelCheckpoint` in one, plus the run's config and status.
    """

    restores = True
    root_only = True  # distributed runs: rank 0 alone writes and prints

    def __init__(self, spec: RunDir, verbose: int = 1) -> None:
        self.spec = spec
        self.verbose = verbose
        self.plot = spec.plot
        self.folder: Path | None = None
        self.lock: RunLock | None = None
        self.config: dict[str, Any] = {}
        self.stuck: StuckDetector | None = None

    @property
    def run_id(self) -> str:
        """The run folder's name: its start time in UTC and a random suffix (ids sort by start time)."""
        assert self.folder is not None
        return self.folder.name

    # ---- creating and reopening ------------------------------------------------------------------
    def _start(self, config: dict[str, Any]) -> None:
        """Create `root/<new run id>/` and write config.json there."""
        root = Path(self.spec.path)
        try:
            root.mkdir(parents=True, exist_ok=True)
            for _ in range(10):
                run_id = new_run_id()
                try:
                    (root / run_id).mkdir()
                    break
                except FileExistsError:
                    continue
            else:  # pragma: no cover - ten clashes on 16 random bits within a microsecond
                raise FileExistsError(f"could not find a free run id under {root}")
        except OSError as exc:
            raise ValueError(
                f"cannot create a run folder under {root}: {exc.strerror or exc}. "
                "Pass a run_dir (--run-dir) in a folder you can write to, e.g. ./runs."
            ) from None
        self.folder = root / run_id
        self.lock = RunLock(self.folder).acquire()
        self.config = {"run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **config}
        write_text(self.folder / CONFIG, json.dumps(self.config, indent=2) + "\n")
        self.set_status("running")

    def _reopen(self, config: dict[str, Any]) -> None:
        """Check that `config` is the run's own (epochs may grow) and open its folder for more epochs."""
        folder = Path(self.spec.path)
        if folder.is_dir():  # held for the run's life: a second process resuming it is refused, nothing deleted
            self.lock = RunLock(folder).acquire()
        stored = read_config(folder)
        ckpt = folder / CHECKPOINT
        if ckpt.exists():  # the checkpoint keeps the config the run was made with, whatever config.json says now
            saved = stored_config(ckpt)
            changed = config_differences(saved, stored) if saved is not None else []
            if changed:
                raise ValueError(
                    f"cannot resume {folder}: its {CONFIG} was changed after the run started "
                    f"({'; '.join(changed)}). Undo the change, or start a new run with "
                    f"`xpnn train --config {folder / CONFIG}`."
                )
        changed = config_differences(stored, config)
        if changed:
            raise ValueError(
                f"cannot resume {folder}: this fit's settings differ from the run's ({'; '.join(changed)}). "
                "Resume with the run's own model, optimizer, data and fit arguments, or start a new run."
            )
        for stale in folder.glob(".*.tmp"):  # a save that was killed before its rename
            stale.unlink(missing_ok=True)
        self.folder = folder
        self.config = {**stored, "epochs": config["epochs"]}
        if stored.get("epochs") != config["epochs"]:
            write_text(folder / CONFIG, json.dumps(self.config, indent=2) + "\n")
            self.event(f"epochs extended from {stored.get('epochs')} to {config['epochs']}")

    def restore(self, model: Model, state: TrainState) -> bool:
        """Load the last checkpoint into `model`, the optimizer and `state`; False when there is none yet."""
        assert self.folder is not None and state.settings is not None
        ckpt = self.folder / CHECKPOINT
        if not ckpt.exists():
            return False
        restore_checkpoint(ckpt, model, state.settings.optimizer, state, None)
        self.event(f"resumed from the checkpoint after epoch {state.epoch} (step {state.step})")
        return True

    # ---- files -------------------------------------------------------------------------------------
    def set_status(self, status: str, **info: Any) -> None:
        """Rewrite status.json (atomically): running / finished / diverged / stopped (stuck), with `info`."""
        assert self.folder is not None
        write_text(self.folder / STATUS, json.dumps({"status": status, **info}, indent=2) + "\n")

    def event(self, message: str) -> None:
        """Append a timestamped line to events.log (warnings, resumes, the end)."""
        assert self.folder is not None
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with open(self.folder / EVENTS, "a", encoding="utf-8") as f:
            f.write(f"{stamp}  {message}\n")
            f.flush()
            os.fsync(f.fileno())

    def save_checkpoint(self, model: Model, state: TrainState) -> None:
        """Write checkpoint.h5 atomically; the previous one stays until the new one is on disk."""
        assert self.folder is not None and state.settings is not None
        write_checkpoint(
            self.folder / CHECKPOINT, model, state.settings.optimizer, state, self.config,
            before_replace=lambda: _kill_point(f"checkpoint:{state.epoch}"),
        )  # fmt: skip

    def write_history(self, history: History) -> None:
        """Rewrite history.csv (atomically) from `history`."""
        assert self.folder is not None
        write_text(self.folder / HISTORY, history_csv(history))

    def write_plot(self, model: Model, state: TrainState) -> None:
        """run_stats.png: loss and accuracy per epoch, the settings in the title, chance, stuck and resumed epochs."""
        history = state.history
        if not self.plot or not history.epoch or self.folder is None or state.settings is None:
            return
        from xpnn.training.plots import plot_run_stats

        s = state.settings
        lr = getattr(s.optimizer, "learning_rate", None)
        settings = {"optimizer": type(s.optimizer).__name__, "learning_rate": lr, "batch_size": s.batch_size,
                    "seed": s.seed}  # fmt: skip
        try:
            plot_run_stats(
                history, self.folder / PLOT, title=f"run {self.run_id}", hyperparameters=settings,
                classes=int(model.output_shape[-1]), resumed_epochs=self.resumed_epochs(),
                stuck_epochs=[int(r["epoch"]) for r in self.stuck.reports] if self.stuck is not None else [],
            )  # fmt: skip
        except ImportError as exc:
            self.event(f"no {PLOT}: {exc}")

    def resumed_epochs(self) -> list[int]:
        """The epochs after which this run was resumed, read back from events.log."""
        assert self.folder is not None
        try:
            lines = (self.folder / EVENTS).read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        marker = "resumed from the checkpoint after epoch "
        return [int(line.split(marker)[1].split()[0]) for line in lines if marker in line]

    # ---- Callback hooks ----------------------------------------------------------------------------
    def on_train_begin(self, model: Model, state: TrainState) -> None:
        """Create the folder (config.json, initial.h5, a first checkpoint) or reopen it and restore its checkpoint."""
        settings = state.settings
        assert settings is not None, "a run folder is kept by fit"
        config = {
            **run_config(model, settings, self.spec.data),
            "stop_when_stuck": self.spec.stop_when_stuck,
            **self.spec.extra,
            "versions": versions(),
        }
        if self.spec.resume:
            self._reopen(config)
            if self.restore(model, state) and self.verbose:
                print(f"resuming run {self.folder} after epoch {state.epoch} of {settings.epochs}", file=sys.stderr)
        else:
            self._start(config)
            if self.verbose:
                print(f"run folder: {self.folder}", file=sys.stderr)
        assert self.folder is not None
        self.spec.folder = self.folder
        if state.epoch == 0 and not (self.folder / CHECKPOINT).exists():
            save_model(model, self.folder / INITIAL, optimizer=settings.optimizer)
            self.save_checkpoint(model, state)
        self.set_status("running", epoch=state.epoch, epochs=settings.epochs)

    def on_batch_end(self, model: Model, state: TrainState, batch: Batch) -> None:
        """Nothing but the tests' kill point ($XPNN_TEST_KILL): a run folder writes once per epoch."""
        _kill_point(f"step:{state.step}")

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Write the checkpoint, history.csv and status.json."""
        self.save_checkpoint(model, state)
        self.write_history(state.history)
        self.set_status("running", epoch=state.epoch, epochs=self.config.get("epochs"), **_final(state.history))

    def on_train_end(self, model: Model, state: TrainState) -> None:
        """Write model.h5, history.csv, run_stats.png and the final status; free the folder's lock."""
        assert self.folder is not None and state.settings is not None
        save_model(model, self.folder / MODEL, optimizer=state.settings.optimizer)
        self.write_history(state.history)
        self.write_plot(model, state)
        stuck = self.stuck.reports if self.stuck is not None else []
        status = "stopped (stuck)" if state.stop and stuck else "finished"
        self.set_status(status, epoch=state.epoch, epochs=self.config.get("epochs"), **_final(state.history))
        self.event(f"{status} after epoch {state.epoch}")
        self._release()

    def _release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def on_train_failed(self, model: Model, state: TrainState, exc: BaseException) -> None:
        """Record a divergence (the checkpoint of the last finished epoch stays as it was); free the folder."""
        if not isinstance(exc, DivergedError) or self.folder is None:
            self._release()
            return
        self.write_history(state.history)
        self.write_plot(model, state)
        when = f"after epoch {state.epoch}" if state.epoch else "the initial weights, epoch 0"
        kept = f"The last good checkpoint ({when}) is kept in {self.folder / CHECKPOINT}."
        self.set_status("diverged", epoch=exc.epoch, step=exc.step, cost=str(exc.cost), message=str(exc))
        self.event(f"diverged: {exc} {kept}")
        exc.args = (f"{exc} {kept}",)
        self._release()


def _final(history: History) -> dict[str, float]:
    return {k: v[-1] for k, v in history.history.items() if v}


def run_callbacks(run_dir: str | os.PathLike | RunDir, resume: bool = False, verbose: int = 1) -> list[Callback]:
    """The callbacks that keep a run folder for one `fit`: a `StuckDetector` (always on) and the `Run`."""
    if isinstance(run_dir, RunDir):
        spec = run_dir
        spec.resume = spec.resume or resume
    elif isinstance(run_dir, (str, os.PathLike)):
        spec = RunDir(run_dir, resume=resume)
    else:
        raise TypeError(f"run_dir must be a folder path or an xpnn.runs.RunDir; got {type(run_dir).__name__}.")
    run = Run(spec, verbose)
    run.stuck = StuckDetector(stop=spec.stop_when_stuck, log=run.event, verbose=verbose)
    run.stuck.root_only = True  # it logs to the run folder, which rank 0 keeps
    return [run.stuck, run]
