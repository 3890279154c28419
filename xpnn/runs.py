"""Run folders: `runs/<run id>/` with config.json, history.csv, checkpoint.h5, model.h5 and run_stats.png.

A checkpoint after every epoch holds the weights, the optimizer's moments and step, the batch-order RNG
state, the epoch and the history, so a run killed at any point continues bit-identically from its last
checkpoint (`fit(..., run_dir=path, resume=True)` or `xpnn train --resume runs/<id>`). Every file is
replaced atomically; a new checkpoint replaces the old one only once it is on disk.
"""

from __future__ import annotations

import csv
import hashlib
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
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from xpnn.backends import get_backend
from xpnn.callbacks import StuckDetector
from xpnn.errors import DivergedError
from xpnn.io import atomic_write, layer_configs, open_model_file, optimizer_config, save_model, write_model
from xpnn.losses import Loss
from xpnn.optimizers import Optimizer
from xpnn.train import Batch, Callback, History, TrainState

if TYPE_CHECKING:
    from xpnn.model import Sequential

CONFIG, HISTORY, CHECKPOINT, MODEL = "config.json", "history.csv", "checkpoint.h5", "model.h5"
INITIAL, PLOT, STATUS, EVENTS = "initial.h5", "run_stats.png", "status.json", "events.log"
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")
RUN_FORMAT = "xpnn-run"
# config.json keys that describe the machine or the moment rather than the run; a resume may differ in them
UNCHECKED_KEYS = ("run_id", "created", "versions", "format", "format_version")
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


def fingerprint(arr: Any) -> dict[str, Any]:
    """Shape, dtype and SHA-256 of an array, to tell on resume whether the data are the same."""
    host = np.ascontiguousarray(get_backend().to_host(arr) if not isinstance(arr, np.ndarray) else arr)
    return {"shape": list(host.shape), "dtype": str(host.dtype), "sha256": hashlib.sha256(host.data).hexdigest()}


def versions() -> dict[str, str]:
    from xpnn import __version__

    return {
        "xpnn": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "platform": platform.platform(),
    }


def run_config(
    model: Sequential,
    optimizer: Optimizer,
    loss: Loss,
    epochs: int,
    batch_size: int,
    shuffle: str,
    seed: int | None,
    x: Any,
    y: Any,
    validation_data: tuple[Any, Any] | None,
    spec: RunDir,
) -> dict[str, Any]:
    """Everything needed to repeat the run (config.json), run_id and created left for `start` to fill."""
    data = dict(spec.data)
    data["train"] = {"x": fingerprint(x), "y": fingerprint(y)}
    if validation_data is not None:
        data["validation"] = {"x": fingerprint(validation_data[0]), "y": fingerprint(validation_data[1])}
    return {
        "format": RUN_FORMAT,
        "format_version": 1,
        "layers": layer_configs(model),
        "input_shape": list(model.input_shape or ()),
        "dtype": str(model.dtype),
        "optimizer": optimizer_config(optimizer),
        "loss": loss.name or type(loss).__name__,
        "epochs": epochs,
        "batch_size": batch_size,
        "shuffle": shuffle,
        "seed": seed,
        "backend": get_backend().name,
        "stop_when_stuck": spec.stop_when_stuck,
        "data": data,
        **spec.extra,
        "versions": versions(),
    }


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """'key: old → new' for each run-defining key that differs (nested tables compared key by key)."""
    out = []
    for key in sorted(set(old) | set(new)):
        if not prefix and key in UNCHECKED_KEYS:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_differences(a, b, f"{prefix}{key}."))
        elif json.dumps(a, sort_keys=True) != json.dumps(b, sort_keys=True):
            out.append(f"{prefix}{key}: {json.dumps(a)[:80]} → {json.dumps(b)[:80]}")
    return out


def write_text(path: Path, text: str) -> None:
    """Replace a small text file atomically."""

    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def history_csv(history: History) -> str:
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


def _rng_from_state(rng_state: dict[str, Any]) -> np.random.Generator:
    bit_generator = getattr(np.random, rng_state["bit_generator"])()
    bit_generator.state = rng_state
    return np.random.Generator(bit_generator)


class Run(Callback):
    """The `Callback` that keeps a run folder: config at the start, a checkpoint and history.csv after each
    epoch, model.h5 and run_stats.png at the end, status.json and events.log throughout."""

    root_only = True  # distributed runs: rank 0 alone writes and prints

    def __init__(self, folder: Path, config: dict[str, Any], optimizer: Optimizer, plot: bool = True) -> None:
        self.folder = folder
        self.config = config
        self.optimizer = optimizer
        self.plot = plot
        self.stuck: StuckDetector | None = None

    @property
    def run_id(self) -> str:
        return self.folder.name

    # ---- creating and reopening ------------------------------------------------------------------
    @classmethod
    def start(cls, root: str | os.PathLike, config: dict[str, Any], optimizer: Optimizer, plot: bool = True) -> Run:
        """Create `root/<new run id>/` and write config.json there."""
        root = Path(root)
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
        folder = root / run_id
        config = {"run_id": run_id, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **config}
        run = cls(folder, config, optimizer, plot)
        write_text(folder / CONFIG, json.dumps(config, indent=2) + "\n")
        run.set_status("running")
        return run

    @classmethod
    def reopen(cls, folder: str | os.PathLike, config: dict[str, Any], optimizer: Optimizer, plot: bool = True) -> Run:
        """Check that `config` is the run's own and open its folder for more epochs."""
        folder = Path(folder)
        stored = read_config(folder)
        ckpt = folder / CHECKPOINT
        if ckpt.exists():  # the checkpoint keeps the config the run was made with, whatever config.json says now
            with open_model_file(ckpt, "checkpoint") as f:
                if "train_state" in f:
                    changed = config_differences(json.loads(f["train_state"].attrs["config"]), stored)
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
        return cls(folder, {**stored}, optimizer, plot)

    def restore(self, model: Sequential, state: TrainState) -> bool:
        """Load the last checkpoint into `model`, the optimizer and `state`; False when there is none yet."""
        ckpt = self.folder / CHECKPOINT
        if not ckpt.exists():
            return False
        from xpnn.io import read_model

        with open_model_file(ckpt, "checkpoint") as f:
            saved, saved_opt = read_model(f)
            ts = f["train_state"].attrs
            epoch, step = int(ts["epoch"]), int(ts["step"])
            rng = _rng_from_state(json.loads(ts["rng"]))
            hist = json.loads(ts["history"])
        model.set_weights(saved.get_weights())
        if saved_opt is not None:
            self.optimizer.set_state(saved_opt.get_state())
        state.epoch, state.step, state.rng = epoch, step, rng
        state.history = History(history=hist["history"], epoch=hist["epoch"])
        self.event(f"resumed from the checkpoint after epoch {epoch} (step {step})")
        return True

    # ---- files -------------------------------------------------------------------------------------
    def set_status(self, status: str, **info: Any) -> None:
        write_text(self.folder / STATUS, json.dumps({"status": status, **info}, indent=2) + "\n")

    def event(self, message: str) -> None:
        """Append a timestamped line to events.log (warnings, resumes, the end)."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with open(self.folder / EVENTS, "a", encoding="utf-8") as f:
            f.write(f"{stamp}  {message}\n")
            f.flush()
            os.fsync(f.fileno())

    def save_checkpoint(self, model: Sequential, state: TrainState) -> None:
        """Write checkpoint.h5 atomically; the previous one stays until the new one is on disk."""
        config = {k: v for k, v in self.config.items() if k not in UNCHECKED_KEYS}

        def write(tmp: Path) -> None:
            with h5py.File(tmp, "w") as f:
                write_model(f, model, self.optimizer)
                ts = f.create_group("train_state")
                ts.attrs["epoch"] = state.epoch
                ts.attrs["step"] = state.step
                ts.attrs["rng"] = json.dumps(state.rng.bit_generator.state)
                ts.attrs["history"] = json.dumps({"history": state.history.history, "epoch": state.history.epoch})
                ts.attrs["config"] = json.dumps(config)

        atomic_write(self.folder / CHECKPOINT, write, before_replace=lambda: _kill_point(f"checkpoint:{state.epoch}"))

    def write_history(self, history: History) -> None:
        write_text(self.folder / HISTORY, history_csv(history))

    def write_plot(self, history: History) -> None:
        if not self.plot or not history.epoch:
            return
        from xpnn.plots import plot_run_stats

        try:
            plot_run_stats(history, self.folder / PLOT, title=f"run {self.run_id}")
        except ImportError as exc:
            self.event(f"no {PLOT}: {exc}")

    # ---- Callback hooks ----------------------------------------------------------------------------
    def on_train_begin(self, model: Sequential, state: TrainState) -> None:
        if state.epoch == 0 and not (self.folder / CHECKPOINT).exists():
            save_model(model, self.folder / INITIAL, optimizer=self.optimizer)
            self.save_checkpoint(model, state)
        self.set_status("running", epoch=state.epoch, epochs=self.config.get("epochs"))

    def on_batch_end(self, model: Sequential, state: TrainState, batch: Batch) -> None:
        _kill_point(f"step:{state.step}")

    def on_epoch_end(self, model: Sequential, state: TrainState, logs: dict[str, float]) -> None:
        self.save_checkpoint(model, state)
        self.write_history(state.history)
        self.set_status("running", epoch=state.epoch, epochs=self.config.get("epochs"), **_final(state.history))

    def on_train_end(self, model: Sequential, state: TrainState) -> None:
        save_model(model, self.folder / MODEL, optimizer=self.optimizer)
        self.write_history(state.history)
        self.write_plot(state.history)
        stuck = self.stuck.reports if self.stuck is not None else []
        status = "stopped (stuck)" if state.stop and stuck else "finished"
        self.set_status(status, epoch=state.epoch, epochs=self.config.get("epochs"), **_final(state.history))
        self.event(f"{status} after epoch {state.epoch}")

    def diverged(self, model: Sequential, state: TrainState, exc: DivergedError) -> DivergedError:
        """Record a divergence; the checkpoint of the last finished epoch stays as it was."""
        self.write_history(state.history)
        self.write_plot(state.history)
        when = f"after epoch {state.epoch}" if state.epoch else "the initial weights, epoch 0"
        kept = f"The last good checkpoint ({when}) is kept in {self.folder / CHECKPOINT}."
        self.set_status("diverged", epoch=exc.epoch, step=exc.step, cost=str(exc.cost), message=str(exc))
        self.event(f"diverged: {exc} {kept}")
        new = DivergedError(exc.epoch, exc.step, exc.cost)
        new.args = (f"{exc} {kept}",)
        return new


def _final(history: History) -> dict[str, float]:
    return {k: v[-1] for k, v in history.history.items() if v}


def attach(
    model: Sequential,
    run_dir: str | os.PathLike | RunDir,
    resume: bool,
    optimizer: Optimizer,
    loss: Loss,
    x: Any,
    y: Any,
    validation_data: tuple[Any, Any] | None,
    state: TrainState,
    verbose: int,
    *,
    epochs: int,
    batch_size: int,
    shuffle: str,
    seed: int | None,
) -> tuple[Run, list[Callback]]:
    """Start (or, with `resume`, reopen and restore) the run folder for one `fit`; returns the Run and its callbacks."""
    if isinstance(run_dir, RunDir):
        spec = run_dir
        spec.resume = spec.resume or resume
    elif isinstance(run_dir, (str, os.PathLike)):
        spec = RunDir(run_dir, resume=resume)
    else:
        raise TypeError(f"run_dir must be a folder path or an xpnn.runs.RunDir; got {type(run_dir).__name__}.")
    config = run_config(model, optimizer, loss, epochs, batch_size, shuffle, seed, x, y, validation_data, spec)
    if spec.resume:
        run = Run.reopen(spec.path, config, optimizer, spec.plot)
        if run.restore(model, state) and verbose:
            print(f"resuming run {run.folder} after epoch {state.epoch} of {epochs}", file=sys.stderr)
    else:
        run = Run.start(spec.path, config, optimizer, spec.plot)
        if verbose:
            print(f"run folder: {run.folder}", file=sys.stderr)
    spec.folder = run.folder
    run.stuck = StuckDetector(stop=spec.stop_when_stuck, log=run.event, verbose=verbose)
    return run, [run.stuck, run]
