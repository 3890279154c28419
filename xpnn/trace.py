"""Per-layer truth for one pass (`xpnn.trace(model, x, y)`), and step-by-step traces of whole runs to HDF5.

A trace holds what a TensorFlow comparison needs: the cost, every layer's output, the
gradients aligned with `get_weights()`, and every layer's input gradient, all as host arrays.
`TraceRecorder` writes the same per step of `fit`/`train_on_batch` (plus the updated weights),
so two runs can be compared iteration by iteration, not only on one minibatch.

File layout (read back with `read_trace`):
    attrs: format="xpnn-trace", version, dtype, layers (JSON), steps
    initial_weights/00, 01, ...               weights before the first recorded step
    steps/000001/cost, logits, grads/NN, weights/NN (after the update), epoch, index, indices
                 outputs/NN, input_grads/NN   (when the recorder records layers)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xpnn.backends import get_backend
from xpnn.losses import Loss
from xpnn.model import Model, Pass
from xpnn.training.loop import Batch, Callback, TrainState

FORMAT = "xpnn-trace"
VERSION = 1


@dataclass(frozen=True)
class Trace:
    """One forward and backward pass on host arrays; `grads` align with `model.get_weights()`.

    TF/Keras counterpart: What a tf.GradientTape around one step gives.
    """

    cost: float
    logits: np.ndarray
    outputs: list[np.ndarray]  # outputs[i]: layer i's output (the last one is the logits)
    grads: list[np.ndarray]
    input_grads: list[np.ndarray]  # input_grads[i]: d cost / d (layer i's input)


def _host(arrays: Sequence[Any]) -> list[np.ndarray]:
    backend = get_backend()
    return [np.array(backend.to_host(a), copy=True) for a in arrays]


def trace(model: Model, x: Any, y: Any, loss: str | Loss | None = None, training: bool = True) -> Trace:
    """Run one forward and backward pass on (x, y) without updating the weights and return every layer's truth.

    What a `tf.GradientTape` around a Keras model's layers gives, with every intermediate kept: the cost, each
    layer's output and input gradient, and the weight gradients.

    `training` selects Dropout's and BatchNormalization's mode (True, as in a training step); layer state that
    a training-mode pass changes (BatchNorm's moving statistics, Dropout's stream) is put back afterwards.

    `loss` defaults to the model's compiled loss, else "softmax_cross_entropy". x and y are checked and
    converted as `fit` does (uint8 images scaled to [0, 1], integer labels made one-hot); an unbuilt
    model is built for x's shape with seed 0.
    """
    loss_fn = model._default_loss(loss)
    xb, yb = model._prepare(x, y)
    xp = get_backend().xp
    moving = [{k: xp.array(v, copy=True) for k, v in layer.non_trainable.items()} for layer in model.layers]
    layer_state = model.get_state()
    p = model.run_pass(xb, yb, loss_fn, record=True, training=training)
    for layer, kept in zip(model.layers, moving):  # only what a pass may change: moving statistics, streams
        layer.non_trainable.update(kept)
    model.set_state(layer_state)
    return Trace(
        cost=float(p.cost),
        logits=_host([p.logits])[0],
        outputs=_host(p.outputs or []),
        grads=_host(p.grads),
        input_grads=_host(p.input_grads or []),
    )


def _write_list(group: h5py.Group, name: str, arrays: Sequence[np.ndarray]) -> None:
    sub = group.create_group(name)
    for i, a in enumerate(arrays):
        sub.create_dataset(f"{i:02d}", data=a)


def _read_list(group: h5py.Group, name: str) -> list[np.ndarray]:
    if name not in group:
        return []
    sub = group[name]
    return [np.asarray(sub[k]) for k in sorted(sub)]


class TraceRecorder(Callback):
    """Records every training step to an HDF5 trace; the file appears, complete, when the recorder closes.

    Steps go to a temporary file beside `path` (flushed after each step, so a crashed run can still be
    inspected there); `close()` fsyncs it and moves it over `path` with `os.replace`. Use it as
    `model.fit(..., trace="run.h5")` (closed when fit returns or raises), or keep one open across
    `train_on_batch` calls: `with TraceRecorder("run.h5") as rec: model.train_on_batch(x, y, trace=rec)`.
    `layers=False` keeps only costs, gradients and weights (a full 64x64 run's layer outputs are large).
    """

    root_only = True  # distributed runs: rank 0 alone writes the file

    def __init__(self, path: str | os.PathLike, layers: bool = True) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"trace path {str(self.path)!r} is a folder; pass a file name such as 'run_trace.h5'.")
        if not self.path.parent.is_dir():
            raise ValueError(f"trace folder {str(self.path.parent)!r} does not exist; create it first.")
        self.record = bool(layers)  # Callback.record: ask fit for per-layer outputs and input grads
        self.steps = 0
        self._file: h5py.File | None = None
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    @property
    def closed(self) -> bool:
        """True once `close` has written the file (or before `start`)."""
        return self._file is None

    def start(self, model: Model) -> None:
        """Open the temporary file and write the run's description and initial weights (once)."""
        if self._file is not None:
            return
        f = h5py.File(self._tmp, "w")
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["dtype"] = str(model.dtype)
        f.attrs["layers"] = json.dumps([{"class": layer.name, **layer.get_config()} for layer in model.layers])
        f.attrs["steps"] = 0
        _write_list(f, "initial_weights", model.get_weights())
        f.flush()
        self._file = f

    def write_step(
        self, model: Model, result: Pass, epoch: int = 0, index: int = 0, indices: np.ndarray | None = None
    ) -> None:
        """Append one step: `result` is the step's pass (before the update), the weights are read after it."""
        if self._file is None:
            self.start(model)
        assert self._file is not None
        self.steps += 1
        g = self._file.create_group(f"steps/{self.steps:06d}")
        g.create_dataset("cost", data=_host([result.cost])[0])
        g.create_dataset("logits", data=_host([result.logits])[0])
        g.attrs["epoch"], g.attrs["index"] = int(epoch), int(index)
        if indices is not None:
            g.create_dataset("indices", data=np.asarray(indices))
        if self.record and result.outputs is not None:
            _write_list(g, "outputs", _host(result.outputs))
            _write_list(g, "input_grads", _host(result.input_grads or []))
        _write_list(g, "grads", _host(result.grads))
        _write_list(g, "weights", model.get_weights())
        self._file.attrs["steps"] = self.steps
        self._file.flush()

    def close(self) -> None:
        """Finish the file: flush, fsync, and move it over `path` atomically. Closing twice does nothing."""
        if self._file is None:
            return
        self._file.flush()
        self._file.close()
        self._file = None
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self.path)

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- Callback hooks (fit) -------------------------------------------------------------------
    def on_train_begin(self, model: Model, state: TrainState) -> None:
        """Open the file for `model` when `fit` starts."""
        self.start(model)

    def on_batch_end(self, model: Model, state: TrainState, batch: Batch) -> None:
        """Write the step `fit` just took (its cost, outputs, gradients and updated weights)."""
        self.write_step(model, batch.result, batch.epoch, batch.index + 1, batch.indices)


@contextmanager
def tracing(spec: str | os.PathLike | TraceRecorder | None) -> Iterator[TraceRecorder | None]:
    """The recorder behind a `trace=` argument: a path makes one that is closed on exit; a recorder stays open."""
    if spec is None:
        yield None
        return
    if isinstance(spec, TraceRecorder):
        yield spec
        return
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"trace must be a file path or an xpnn.trace TraceRecorder; got {type(spec).__name__}.")
    recorder = TraceRecorder(spec)
    try:
        yield recorder
    finally:
        recorder.close()


@dataclass
class TraceStep:
    """One recorded step, host arrays (outputs and input_grads are empty when layers were not recorded)."""

    cost: np.ndarray
    logits: np.ndarray
    grads: list[np.ndarray]
    weights: list[np.ndarray]
    outputs: list[np.ndarray] = field(default_factory=list)
    input_grads: list[np.ndarray] = field(default_factory=list)
    epoch: int = 0
    index: int = 0
    indices: np.ndarray | None = None


@dataclass
class TraceFile:
    """A whole recorded run: its description, the weights before step 1, and the steps in order."""

    attrs: dict[str, Any]
    initial_weights: list[np.ndarray]
    steps: list[TraceStep]


def read_trace(path: str | os.PathLike) -> TraceFile:
    """Load a file written by `TraceRecorder` (xpnn's own format; TensorFlow has no per-step equivalent)."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not an xpnn trace (no format={FORMAT!r} attribute); write it with trace=.")
        steps = []
        for name in sorted(f.get("steps", {})):
            g = f["steps"][name]
            steps.append(
                TraceStep(
                    cost=np.asarray(g["cost"]),
                    logits=np.asarray(g["logits"]),
                    grads=_read_list(g, "grads"),
                    weights=_read_list(g, "weights"),
                    outputs=_read_list(g, "outputs"),
                    input_grads=_read_list(g, "input_grads"),
                    epoch=int(g.attrs["epoch"]),
                    index=int(g.attrs["index"]),
                    indices=np.asarray(g["indices"]) if "indices" in g else None,
                )
            )
        return TraceFile(dict(f.attrs), _read_list(f, "initial_weights"), steps)
