"""A minimal resumable checkpoint: weights, optimizer state, epoch, step, batch-order RNG and history.

One .npz file, written by rank 0 after every epoch through a temporary file and `os.replace`, so a
crash leaves the old checkpoint or the new one. Any number of ranks (or one plain process) can
resume from it: the run continues exactly where it stopped, because the batch order comes from
the saved RNG state and not from the rank count.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.distributed.world import is_root
from xpnn.optimizers import Optimizer
from xpnn.train import Callback, History, TrainState

if TYPE_CHECKING:
    from xpnn.model import Sequential

FORMAT = "xpnn-checkpoint-1"


def save_checkpoint(path: str | os.PathLike, model: Sequential, optimizer: Optimizer, state: TrainState) -> None:
    """Write everything needed to continue the run to `path` (.npz), atomically."""
    backend = get_backend()
    arrays: dict[str, Any] = {"format": np.array(FORMAT), "optimizer": np.array(repr(optimizer))}
    for i, w in enumerate(model.get_weights()):
        arrays[f"weights/{i}"] = w
    for key, value in optimizer.get_state().items():
        if isinstance(value, list):
            arrays[f"opt/{key}/len"] = np.array(len(value))
            for i, a in enumerate(value):
                arrays[f"opt/{key}/{i}"] = backend.to_host(a)
        else:
            arrays[f"opt/{key}"] = np.array(value)
    arrays["epoch"] = np.array(state.epoch)
    arrays["step"] = np.array(state.step)
    arrays["rng"] = np.array(json.dumps(state.rng.bit_generator.state))
    arrays["history"] = np.array(json.dumps({"history": state.history.history, "epoch": state.history.epoch}))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, model: Sequential, optimizer: Optimizer, state: TrainState) -> None:
    """Restore the model's weights, the optimizer's state and `state` (epoch, step, RNG, history) from `path`."""
    with np.load(path, allow_pickle=False) as f:
        data = {key: f[key] for key in f.files}
    if str(data.get("format")) != FORMAT:
        raise ValueError(f"{path} is not an xpnn checkpoint ({FORMAT}); delete it or pass another checkpoint= path.")
    if str(data["optimizer"]) != repr(optimizer):
        raise ValueError(
            f"{path} was written with {data['optimizer']} but this run uses {optimizer!r}; "
            "resume with the same optimizer settings or start a new checkpoint file."
        )
    count = sum(key.startswith("weights/") for key in data)
    model.set_weights([data[f"weights/{i}"] for i in range(count)])
    opt_state: dict[str, Any] = {}
    for key in data:
        parts = key.split("/")
        if parts[0] == "opt" and len(parts) == 2:
            opt_state[parts[1]] = data[key].item()
        elif parts[0] == "opt" and parts[2] == "len":
            opt_state[parts[1]] = [data[f"opt/{parts[1]}/{i}"] for i in range(int(data[key]))]
    optimizer.set_state(opt_state)
    state.epoch, state.step = int(data["epoch"]), int(data["step"])
    state.rng = np.random.default_rng()
    state.rng.bit_generator.state = json.loads(str(data["rng"]))
    saved = json.loads(str(data["history"]))
    state.history = History(saved["history"], saved["epoch"])


class Checkpoint(Callback):
    """`fit(..., checkpoint=path)`: resume from `path` if it exists, and rewrite it after every epoch (rank 0)."""

    root_only = True

    def __init__(self, path: str | os.PathLike, optimizer: Optimizer) -> None:
        self.path = Path(path)
        self.optimizer = optimizer
        if self.path.is_dir():
            raise ValueError(f"checkpoint={str(path)!r} is a folder; pass a file path such as 'run/ckpt.npz'.")

    def resume(self, model: Sequential, state: TrainState) -> bool:
        """Load the checkpoint into `model`, the optimizer and `state` if the file exists; True if it did."""
        if not self.path.exists():
            return False
        load_checkpoint(self.path, model, self.optimizer, state)
        return True

    def on_epoch_end(self, model: Sequential, state: TrainState, logs: dict[str, float]) -> None:
        if is_root():
            save_checkpoint(self.path, model, self.optimizer, state)
