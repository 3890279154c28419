"""Keras's stock callbacks for `fit`: EarlyStopping, ModelCheckpoint, LearningRateScheduler,
ReduceLROnPlateau, CSVLogger and TerminateOnNaN, with Keras 3's arguments, defaults and semantics.

Epochs are numbered as Keras numbers them where a user sees them: from 0 in CSVLogger rows and in the
`epoch` argument of a LearningRateScheduler function, from 1 in ModelCheckpoint's `{epoch}` field.
A callback stops training by setting `model.stop_training = True` (the loop ends after the batch).

Each callback with state returns it from `get_state()` (JSON-friendly; arrays, such as EarlyStopping's
best weights, under the key "arrays") and takes it back in `set_state()`, so a run folder's checkpoint
resumes a killed run exactly. A state restored before `on_train_begin` is kept (not reset) by it.
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xpnn.io import atomic_write, save_model
from xpnn.model import Model
from xpnn.training.loop import Batch, Callback, TrainState

WEIGHTS_FORMAT = "xpnn-weights"
_MIN_NAMES = ("loss", "mae", "mse", "mean_absolute_error", "mean_squared_error", "huber")


def _stop(model: Model, state: TrainState) -> None:
    model.stop_training = True
    state.stop = True


def _optimizer(model: Model) -> Any:
    """The optimizer fit is using (the one it last trained with), else the compiled one."""
    opt = getattr(model, "_last_optimizer", None) or getattr(model, "optimizer", None)
    if opt is None or not hasattr(opt, "learning_rate"):
        raise ValueError("this callback changes the learning rate but the model has no optimizer; compile it first.")
    return opt


class MonitorCallback(Callback):
    """Watches one logged quantity (Keras's MonitorCallback): improvement is `current ∓ min_delta` beating the best."""

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"monitor must be the name of a logged quantity, e.g. 'val_loss'; received {monitor!r}.")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'; received mode={mode!r}.")
        self.monitor, self.mode = monitor, mode
        self.min_delta = abs(float(min_delta))
        if mode == "auto":
            name = monitor.removeprefix("val_")
            if name in _MIN_NAMES or name.endswith("loss"):
                self.mode = "min"
            elif "acc" in name:
                self.mode = "max"
            else:
                raise ValueError(
                    f"{type(self).__name__} cannot tell whether monitor={monitor!r} should go up or down; "
                    "pass mode='max' or mode='min'."
                )
        self.best: float | None = None
        self._warned = False
        self._restored = False

    def _is_improvement(self, value: float, reference: float | None) -> bool:
        if reference is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < reference
        return value - self.min_delta > reference

    def _current(self, logs: dict[str, float]) -> float | None:
        value = logs.get(self.monitor)
        if value is None and not self._warned:
            self._warned = True
            warnings.warn(
                f"{type(self).__name__} is conditioned on `{self.monitor}`, which is not logged. "
                f"Logged quantities are: {','.join(logs)}. (Pass validation_data for val_* quantities.)",
                stacklevel=3,
            )
        return None if value is None else float(value)

    def _fresh(self) -> bool:
        """Whether on_train_begin should reset: not when a state was just restored."""
        fresh, self._restored = not self._restored, False
        return fresh


class EarlyStopping(MonitorCallback):
    """Stop when `monitor` has not improved for `patience` epochs (keras.callbacks.EarlyStopping).

    With `restore_best_weights` the weights of the best epoch are put back when training ends (and
    the first monitored epoch's weights count as best until one improves). `baseline`: improvements
    restart the wait only once they beat it. Epochs before `start_from_epoch` are not monitored.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0; received patience={patience!r}.")
        self.patience, self.verbose = patience, int(verbose)
        self.baseline = None if baseline is None else float(baseline)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)
        self._reset()

    def _reset(self) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights: list[np.ndarray] | None = None
        self.best_epoch = 0

    def on_train_begin(self, model: Model, state: TrainState) -> None:
        """Reset the patience count and the best value, unless a resumed run restored them."""
        if self._fresh():
            self._reset()

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Compare `monitor` with the best so far; stop once it has not improved for `patience` epochs."""
        epoch = state.epoch - 1  # Keras's 0-based index of the epoch that just ended
        current = self._current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = model.get_weights(), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            _stop(model, state)

    def on_train_end(self, model: Model, state: TrainState) -> None:
        """Say where training stopped (verbose) and put the best epoch's weights back (`restore_best_weights`)."""
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping", flush=True)
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.", flush=True)
            model.set_weights(self.best_weights)

    def get_state(self) -> dict[str, Any]:
        """Patience count, best value and epoch, and the best weights under "arrays"."""
        return {
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "has_best_weights": self.best_weights is not None,
            "arrays": [np.array(w, copy=True) for w in self.best_weights or []],
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back what `get_state` returned (a resumed run)."""
        self.wait, self.stopped_epoch = int(state["wait"]), int(state["stopped_epoch"])
        self.best = None if state["best"] is None else float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        arrays = list(state.get("arrays") or [])
        self.best_weights = [np.array(a, copy=True) for a in arrays] if state["has_best_weights"] else None
        self._restored = True


def write_weights(path: str | os.PathLike, weights: list[np.ndarray]) -> Path:
    """Write `weights` (get_weights() order) to an HDF5 `.weights.h5` file atomically.

    TF/Keras counterpart: keras.Model.save_weights.
    """

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = WEIGHTS_FORMAT
            group = f.create_group("weights")
            for i, w in enumerate(weights):
                group.create_dataset(f"{i:03d}", data=w)

    return atomic_write(path, write)


def read_weights(path: str | os.PathLike) -> list[np.ndarray]:
    """The arrays `write_weights` wrote, in order (for `model.set_weights`).

    TF/Keras counterpart: keras.Model.load_weights.
    """
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{path} is not an xpnn weights file (from ModelCheckpoint(save_weights_only=True)).")
        group = f["weights"]
        return [np.asarray(group[key]) for key in sorted(group)]


class ModelCheckpoint(MonitorCallback):
    """Save the model after each epoch (keras.callbacks.ModelCheckpoint), through xpnn.io's atomic writes.

    `filepath` may hold `{epoch}` (from 1) and any logged quantity, e.g. "ck-{epoch:02d}-{val_loss:.2f}.h5".
    A full model (with its optimizer) goes to a `.h5` file (xpnn.io.save_model); with `save_weights_only`
    the weights go to a `.weights.h5` file (read it back with `read_weights`). With `save_best_only` only
    epochs that improve `monitor` are saved (all of them, with a warning, when it is not logged).
    """

    root_only = True

    def __init__(
        self,
        filepath: str | os.PathLike,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        initial_value_threshold: float | None = None,
    ) -> None:
        super().__init__(monitor, mode)
        self.filepath = os.fspath(filepath)
        self.verbose = int(verbose)
        self.save_best_only, self.save_weights_only = bool(save_best_only), bool(save_weights_only)
        self.best = None if initial_value_threshold is None else float(initial_value_threshold)
        if self.save_weights_only and not self.filepath.endswith(".weights.h5"):
            raise ValueError(
                "with save_weights_only=True the filepath must end in .weights.h5; "
                f"received filepath={self.filepath!r}."
            )
        if not self.save_weights_only and (not self.filepath.endswith(".h5") or self.filepath.endswith(".weights.h5")):
            raise ValueError(
                "ModelCheckpoint saves xpnn model files (HDF5): the filepath must end in .h5 "
                f"(or pass save_weights_only=True with .weights.h5); received filepath={self.filepath!r}."
            )

    def file_path(self, epoch: int, logs: dict[str, float]) -> str:
        """`filepath` with its fields filled for `epoch` (counted from 1) and `logs`."""
        try:
            return self.filepath.format(**{**logs, "epoch": epoch})
        except KeyError as exc:
            raise KeyError(
                f"ModelCheckpoint filepath {self.filepath!r} names {exc}, which is not logged; "
                f"logged quantities are: {', '.join(['epoch', *logs])}."
            ) from None

    def _should_save(self, logs: dict[str, float], path: str) -> bool:
        if not self.save_best_only:
            return True
        current = self._current(logs)
        if current is None:
            return True
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print(f"{self.monitor} improved from {self.best} to {current:.5f}, saving model to {path}", flush=True)
            self.best = current
            return True
        return False

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Save the model (or its weights) to `filepath` filled in with the epoch and logs, if it should."""
        path = self.file_path(state.epoch, logs)
        if not self._should_save(logs, path):
            return
        if Path(path).is_dir():
            raise IsADirectoryError(f"ModelCheckpoint filepath {path} is an existing folder; name a file instead.")
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            write_weights(path, model.get_weights())
        else:
            save_model(model, path, getattr(model, "optimizer", None))
        if self.verbose > 0:
            print(f"Epoch {state.epoch}: saved the model to {path}", flush=True)

    def get_state(self) -> dict[str, Any]:
        """The best value so far (for `save_best_only`)."""
        return {"best": self.best}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back what `get_state` returned (a resumed run)."""
        self.best = None if state["best"] is None else float(state["best"])
        self._restored = True


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch to `schedule(epoch, lr)` (or `schedule(epoch)`).

    keras.callbacks.LearningRateScheduler: `epoch` counts from 0, `lr` is the optimizer's present rate;
    the rate used is logged as "learning_rate". The rate lives in the optimizer's state, so a resumed
    run continues with it.
    """

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be a function of (epoch, lr) or (epoch); received {schedule!r}.")
        self.schedule, self.verbose = schedule, int(verbose)

    def on_epoch_begin(self, model: Model, state: TrainState) -> None:
        """Set the optimizer's learning rate to `schedule(epoch, lr)`."""
        opt = _optimizer(model)
        epoch = state.epoch
        try:
            lr = self.schedule(epoch, float(opt.learning_rate))
        except TypeError:  # the one-argument form, as Keras accepts
            lr = self.schedule(epoch)
        if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, (int, float, np.floating, np.integer)):
            raise ValueError(f"the LearningRateScheduler function must return a number; at epoch {epoch} got {lr!r}.")
        if not math.isfinite(float(lr)) or float(lr) < 0:
            raise ValueError(f"the LearningRateScheduler function returned {lr} at epoch {epoch}; use a rate >= 0.")
        opt.learning_rate = float(lr)
        if self.verbose > 0:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(lr)}.", flush=True)

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Log the rate used as "learning_rate", as Keras does."""
        logs["learning_rate"] = float(_optimizer(model).learning_rate)

    def get_state(self) -> None:
        """None: the rate it set lives in the optimizer's state."""
        return None

    def set_state(self, state: dict[str, Any] | None) -> None:
        """Nothing to restore."""


class ReduceLROnPlateau(MonitorCallback):
    """Multiply the learning rate by `factor` once `monitor` has not improved for `patience` epochs.

    keras.callbacks.ReduceLROnPlateau: never below `min_lr`; after a reduction `cooldown` epochs pass
    before the wait counts again. The present rate is logged as "learning_rate".
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        if not 0.0 <= float(factor) < 1.0:
            raise ValueError(f"ReduceLROnPlateau needs 0 <= factor < 1; received factor={factor!r}.")
        if float(min_lr) < 0:
            raise ValueError(f"min_lr must be >= 0; received min_lr={min_lr!r}.")
        self.factor, self.min_lr = float(factor), float(min_lr)
        self.patience, self.cooldown, self.verbose = int(patience), int(cooldown), int(verbose)
        self._reset()

    def _reset(self) -> None:
        self.best, self.cooldown_counter, self.wait = None, 0, 0

    def on_train_begin(self, model: Model, state: TrainState) -> None:
        """Reset the best value and the counters, unless a resumed run restored them."""
        if self._fresh():
            self._reset()

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Log "learning_rate"; reduce it when `monitor` has not improved for `patience` epochs."""
        opt = _optimizer(model)
        logs["learning_rate"] = float(opt.learning_rate)
        current = self._current(logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(opt.learning_rate)
                if old > float(np.float32(self.min_lr)):
                    new = max(old * self.factor, self.min_lr)
                    opt.learning_rate = new
                    if self.verbose > 0:
                        print(f"Epoch {state.epoch}: ReduceLROnPlateau reducing learning rate to {new}.", flush=True)
                    self.cooldown_counter, self.wait = self.cooldown, 0

    def get_state(self) -> dict[str, Any]:
        """Best value, wait and cooldown counters."""
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back what `get_state` returned (a resumed run)."""
        self.best = None if state["best"] is None else float(state["best"])
        self.wait, self.cooldown_counter = int(state["wait"]), int(state["cooldown_counter"])
        self._restored = True


class CSVLogger(Callback):
    """Append each epoch's logs as a row of a CSV file (keras.callbacks.CSVLogger): "epoch" (from 0), then the keys.

    Each row is written with one `os.write` and fsynced, so a crash leaves whole rows. Without `append`
    the file starts afresh; with it (or on resume) rows are added, and a resumed run first cuts the file
    back to the rows its checkpoint had seen.
    """

    root_only = True

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        self.filename, self.sep, self.append = os.fspath(filename), str(separator), bool(append)
        self.keys: list[str] | None = None
        self.size: int | None = None  # bytes of the file after the last row written
        self._restored = False

    def on_train_begin(self, model: Model, state: TrainState) -> None:
        """Start the file afresh (or keep it with `append`); a resumed run cuts it back to its checkpoint's rows."""
        path = Path(self.filename)
        if self._restored:
            self._restored = False
            if path.exists() and self.size is not None and path.stat().st_size > self.size:
                os.truncate(path, self.size)
            return
        self.keys = None
        if not self.append:
            atomic_write(path, lambda tmp: tmp.write_bytes(b""))
        self.size = path.stat().st_size if path.exists() else 0

    def _line(self, values: list[Any]) -> bytes:
        buf = io.StringIO()
        csv.writer(buf, delimiter=self.sep, lineterminator="\n").writerow(values)
        return buf.getvalue().encode()

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Append the epoch's row (the header first, from the first epoch's keys)."""
        path = Path(self.filename)
        data = b""
        if self.keys is None:
            self.keys = sorted(logs)
            if not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]  # as Keras: columns for validation, "NA" without it
            if not path.exists() or path.stat().st_size == 0:
                data += self._line(["epoch", *self.keys])
        data += self._line([state.epoch - 1, *(logs.get(k, "NA") for k in self.keys)])
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.size = path.stat().st_size

    def get_state(self) -> dict[str, Any]:
        """The columns and the file's size after the last row written."""
        return {"keys": self.keys, "size": self.size}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back what `get_state` returned (a resumed run)."""
        self.keys = None if state["keys"] is None else [str(k) for k in state["keys"]]
        self.size = None if state["size"] is None else int(state["size"])
        self._restored = True


class TerminateOnNaN(Callback):
    """Stop training after a batch whose cost is NaN or infinite (keras.callbacks.TerminateOnNaN).

    Reads each batch's cost to the host (one sync per step; the loop alone reads costs once per epoch).
    """

    def get_state(self) -> None:
        """None: it keeps no state."""
        return None

    def set_state(self, state: dict[str, Any] | None) -> None:
        """Nothing to restore."""

    def on_batch_end(self, model: Model, state: TrainState, batch: Batch) -> None:
        """Stop training if this batch's cost is NaN or infinite."""
        cost = float(batch.result.cost)
        if not math.isfinite(cost):
            print(f"Batch {batch.index}: Invalid loss, terminating training", flush=True)
            _stop(model, state)
