"""The one checkpoint format and resume mechanism: `checkpoint.h5` of run folders and `BackupAndRestore`.

A checkpoint is an xpnn model file (architecture, weights, optimizer state; `xpnn.io`) with a
`train_state` group: epoch, step, the batch-order RNG, the history, the layers' and callbacks' own
state, and the run's config (layers, optimizer, loss, batch size, shuffle, seed, backend, and a
SHA-256 of the data). Resuming refuses a config that differs, naming each difference; only `epochs`
may grow, so a finished run can be extended exactly (its first epochs unchanged). Written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xpnn.backends import get_backend
from xpnn.checkpoint_schema import check_counter, check_history, parse_json_attr, rng_from_state
from xpnn.data.sources import is_batch_source
from xpnn.io import layer_configs, open_model_file, optimizer_config, read_model, write_h5, write_model
from xpnn.losses import loss_config
from xpnn.model import Model
from xpnn.optimizers import Optimizer
from xpnn.training.loop import Callback, FitSettings, History, TrainState

CHECKPOINT_FORMAT = "xpnn-run"
# config keys that describe the machine, the moment or the length of the run; a resume may differ in them
UNCHECKED_KEYS = ("run_id", "created", "versions", "format", "format_version", "epochs")


def fingerprint(arr: Any) -> dict[str, Any]:
    """Shape, dtype and SHA-256 of an array, to tell on resume whether the data are the same."""
    host = np.ascontiguousarray(arr if isinstance(arr, np.ndarray) else get_backend().to_host(arr))
    return {"shape": list(host.shape), "dtype": str(host.dtype), "sha256": hashlib.sha256(host.data).hexdigest()}


def run_config(model: Model, settings: FitSettings, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """What defines a run (config.json; a checkpoint keeps it too): model, optimizer, loss, fit settings, data."""
    data = dict(data or {})
    if is_batch_source(settings.x):  # a source is named, not hashed: its batches are read as training goes
        data["train"] = {"source": type(settings.x).__name__, "batches": len(settings.x)}
    elif settings.x is not None:
        data["train"] = {"x": fingerprint(settings.x), "y": fingerprint(settings.y)}
    if settings.validation_data is not None and not is_batch_source(settings.validation_data):
        vx, vy = settings.validation_data
        data["validation"] = {"x": fingerprint(vx), "y": fingerprint(vy)}
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1,
        "layers": layer_configs(model),
        "input_shape": list(model.input_shape or ()),
        "dtype": str(model.dtype),
        "optimizer": optimizer_config(settings.optimizer),
        "loss": loss_config(settings.loss),
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "shuffle": settings.shuffle,
        "seed": settings.seed,
        "backend": get_backend().name,
        "data": data,
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


def _json_array(value: Any) -> Any:
    """JSON for the numpy arrays some bit generators keep in their state (MT19937's key, Philox's counter)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to a checkpoint")


def write_checkpoint(
    path: str | os.PathLike,
    model: Model,
    optimizer: Optimizer,
    state: TrainState,
    config: dict[str, Any],
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Write the checkpoint atomically; the previous one stays until the new one is on disk."""
    config = {k: v for k, v in config.items() if k not in UNCHECKED_KEYS}
    states = [cb.get_state() for cb in state.callbacks]

    def fill(f: h5py.File) -> None:
        """The checkpoint, built in memory and sealed with its checksum by `xpnn.io.write_h5`."""
        write_model(f, model, optimizer)
        ts = f.create_group("train_state")
        ts.attrs["epoch"] = state.epoch
        ts.attrs["step"] = state.step
        ts.attrs["rng"] = json.dumps(state.rng.bit_generator.state, default=_json_array)
        ts.attrs["history"] = json.dumps({"history": state.history.history, "epoch": state.history.epoch})
        ts.attrs["config"] = json.dumps(config)
        ts.attrs["layer_state"] = json.dumps(model.get_state())
        cbs = ts.create_group("callbacks")
        for i, cb_state in enumerate(states):
            if cb_state is None:
                continue
            arrays = cb_state.get("arrays")
            group = cbs.create_group(f"{i:03d}")
            group.attrs["class"] = type(state.callbacks[i]).__name__
            group.attrs["state"] = json.dumps({k: v for k, v in cb_state.items() if k != "arrays"})
            if arrays is not None:
                arrs = group.create_group("arrays")
                for j, a in enumerate(arrays):
                    arrs.create_dataset(f"{j:03d}", data=np.asarray(a))

    write_h5(path, fill, before_replace=before_replace)


def stored_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The config a checkpoint was written with (None for a checkpoint without one)."""
    with open_model_file(path, "checkpoint") as f:
        return _config_in(f, path)


def _config_in(f: h5py.File, path: str | os.PathLike) -> dict[str, Any] | None:
    if "train_state" not in f or "config" not in f["train_state"].attrs:
        return None
    config = parse_json_attr(f["train_state"].attrs["config"], f"{path}: train_state.config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: train_state.config must be a table; got {type(config).__name__}.")
    return config


def restore_checkpoint(
    path: str | os.PathLike, model: Model, optimizer: Optimizer, state: TrainState, config: dict[str, Any] | None
) -> None:
    """Load the checkpoint into `model`, `optimizer`, `state` and its callbacks, after checking `config` matches."""
    path = Path(path)
    with open_model_file(path, "checkpoint") as f:  # opened (and its checksum verified) once
        if config is not None:
            changed = config_differences(_config_in(f, path) or {}, config)
            if changed:
                raise ValueError(
                    f"cannot resume from {path}: this fit's settings or data differ from the checkpoint's "
                    f"({'; '.join(changed)}). Resume with the same model, optimizer, data and fit arguments, "
                    "or start a new checkpoint file."
                )
        try:
            saved_model, saved_opt = read_model(f)
            ts = f["train_state"]
            where = str(path)
            epoch = check_counter(ts.attrs.get("epoch"), "epoch", where)
            step = check_counter(ts.attrs.get("step"), "step", where)
            rng = rng_from_state(parse_json_attr(ts.attrs.get("rng"), f"{where}: train_state.rng"), where)
            hist = check_history(parse_json_attr(ts.attrs.get("history"), f"{where}: train_state.history"), where)
            layer_state = (
                parse_json_attr(ts.attrs["layer_state"], f"{where}: train_state.layer_state")
                if "layer_state" in ts.attrs
                else None
            )
            if layer_state is not None and (not isinstance(layer_state, list) or len(layer_state) != len(model.layers)):
                raise ValueError(f"train_state.layer_state must list one state per layer ({len(model.layers)})")
            cb_states: dict[int, dict[str, Any]] = {}
            if "callbacks" in ts:
                for key, group in ts["callbacks"].items():
                    cb_state = parse_json_attr(group.attrs["state"], f"{where}: callback {key} state")
                    if not isinstance(cb_state, dict):
                        raise ValueError(f"callback {key}'s state must be a table")
                    if "arrays" in group:
                        cb_state["arrays"] = [np.asarray(group["arrays"][k]) for k in sorted(group["arrays"])]
                    cb_states[int(key)] = cb_state
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path} is not a usable xpnn checkpoint ({exc}); delete it or use another.") from None
    try:
        model.set_weights(saved_model.get_weights())
    except ValueError as exc:
        raise ValueError(f"cannot resume from {path}: {exc} The checkpoint holds another architecture.") from None
    if saved_opt is not None:
        optimizer.set_state(saved_opt.get_state(), model.parameters())
    if layer_state is not None:
        model.set_state(layer_state)
    for i, cb in enumerate(state.callbacks):
        if i in cb_states:
            cb.set_state(cb_states[i])
    state.epoch, state.step, state.rng = epoch, step, rng
    state.history = History(history=hist["history"], epoch=hist["epoch"])


class BackupAndRestore(Callback):
    """Keras's `BackupAndRestore`: resume from the checkpoint if there is one, rewrite it after every epoch.

    `path` is a checkpoint file (a name with a suffix, e.g. `ckpt.h5`) or a folder that gets `checkpoint.h5`.
    The run must be the checkpoint's (same model, optimizer, loss, batch size, seed and data; `epochs` may
    grow), else it refuses and names the difference. `delete_checkpoint=True` (Keras's default) removes it when
    training ends; `fit(checkpoint=path)` keeps it, so a later fit can continue with more epochs.
    """

    restores = True
    root_only = True  # distributed runs: rank 0 restores and writes; the strategy broadcasts its state

    def __init__(self, path: str | os.PathLike, delete_checkpoint: bool = True) -> None:
        p = Path(path)
        is_file = bool(p.suffix) and not p.is_dir()
        self.path = p if is_file else p / "checkpoint.h5"
        if not self.path.parent.is_dir():
            if is_file:
                raise ValueError(f"checkpoint folder {str(self.path.parent)!r} does not exist; create it first.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.delete_checkpoint = delete_checkpoint
        self.config: dict[str, Any] | None = None

    def on_train_begin(self, model: Model, state: TrainState) -> None:
        """Restore weights, optimizer, epoch, RNG, history and callbacks' state if the checkpoint exists."""
        assert state.settings is not None, "BackupAndRestore runs inside fit"
        self.config = run_config(model, state.settings)
        if self.path.exists():
            restore_checkpoint(self.path, model, state.settings.optimizer, state, self.config)

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Rewrite the checkpoint (atomically) with everything a resume needs."""
        assert state.settings is not None and self.config is not None
        write_checkpoint(self.path, model, state.settings.optimizer, state, self.config)

    def on_train_end(self, model: Model, state: TrainState) -> None:
        """Remove the checkpoint when `delete_checkpoint` (as Keras does after a run that completes)."""
        if self.delete_checkpoint:
            self.path.unlink(missing_ok=True)
