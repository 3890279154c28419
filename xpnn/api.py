"""The Keras-like front: `Sequential` (a `Model` plus compile, fit, train_on_batch, save) and `load_model`.

This is the top floor below the CLI: it turns `fit`'s arguments into the parts that implement them
(callbacks from `xpnn.training`, a `Strategy` from `xpnn.distributed`, a `TraceRecorder`) and hands
them to the training loop. Nothing below imports it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xpnn import io, keras_format
from xpnn.data.batches import check_shuffle
from xpnn.data.sources import as_source, is_batch_source, is_indexed
from xpnn.distributed.parallel import DataParallel, as_data_parallel
from xpnn.inputs import check_count, input_shape_from
from xpnn.keras_format import is_keras_file, save_keras
from xpnn.losses import Loss, double_softmax_warning, get_loss
from xpnn.metrics import Metric
from xpnn.model import Model
from xpnn.optimizers import Optimizer, get_optimizer
from xpnn.trace import TraceRecorder, tracing
from xpnn.training.checkpoint import BackupAndRestore
from xpnn.training.loop import ArrayFeed, Callback, FitSettings, History, SourceFeed, TrainState, train_epochs
from xpnn.training.progress import progress_callbacks
from xpnn.training.run_folder import RunDir, run_callbacks


def split_validation(x: Any, y: Any, sample_weight: Any, fraction: Any) -> tuple[Any, Any, Any, tuple[Any, Any]]:
    """Keras's `validation_split`: the last `fraction` of the samples, before shuffling, become validation data.

    Returns the training x, y and sample weights (None stays None), and the (x_val, y_val) pair."""
    if isinstance(fraction, bool) or not isinstance(fraction, (float, int, np.floating)) or not 0 <= fraction < 1:
        raise ValueError(f"validation_split must be a fraction in [0, 1); got validation_split={fraction!r}.")
    n = len(x)
    keep = int(n * (1 - float(fraction)))  # Keras: split_at = int(n * (1 - validation_split))
    if keep < 1 or keep == n:
        raise ValueError(
            f"validation_split={fraction} of {n} samples leaves {keep} to train on and {n - keep} to validate; "
            "use a fraction that leaves at least one of each."
        )
    weights = None if sample_weight is None else np.asarray(sample_weight)[:keep]
    return x[:keep], y[:keep], weights, (x[keep:], y[keep:])


class Sequential(Model):
    """A linear stack of layers with Keras's training surface (`keras.Sequential`).

    `Sequential([Conv2D(8, 4, padding="same"), ReLU(), ...], dtype="float32")`; `build`, `predict`,
    `evaluate`, `get_weights`/`set_weights` come from `xpnn.model.Model`.
    """

    def __init__(self, layers: Any, dtype: str = "float32") -> None:
        super().__init__(layers, dtype)
        self._named_optimizers: dict[str, Optimizer] = {}
        self._last_optimizer: Optimizer | None = None  # what save() stores when not compiled
        self._order_rngs: dict[Any, np.random.Generator] = {}  # seed -> its batch-order stream, across fits
        self._warned: set[str] = set()  # warnings given once per model (the double-softmax trap)

    # ---- settings -------------------------------------------------------------------------------
    def compile(
        self,
        optimizer: str | Optimizer = "adam",
        loss: str | Loss = "softmax_cross_entropy",
        metrics: Sequence[str | Metric] | None = None,
    ) -> Sequential:
        """Remember an optimizer, a loss and metrics for calls that leave them out (Keras's `compile`).

        Without `metrics`, fit and evaluate report the loss and, for multi-class classification, accuracy.
        """
        self.optimizer = get_optimizer(optimizer)
        self.loss = get_loss(loss)
        self.compiled_metrics = metrics
        return self

    def _resolve(self, optimizer: str | Optimizer | None, loss: str | Loss | None) -> tuple[Optimizer, Loss]:
        if optimizer is None:
            optimizer = self.optimizer or "adam"
        if isinstance(optimizer, str):  # a name keeps its state across calls, as a compiled optimizer would
            key = optimizer.strip().lower()
            if key not in self._named_optimizers:
                self._named_optimizers[key] = get_optimizer(optimizer)
            optimizer = self._named_optimizers[key]
        self._last_optimizer = get_optimizer(optimizer)
        loss_fn = self._default_loss(loss)
        warning = double_softmax_warning(self.layers[-1].name, loss_fn)
        if warning and warning not in self._warned:
            self._warned.add(warning)
            warnings.warn(warning, stacklevel=3)
        return self._last_optimizer, loss_fn

    # ---- training -------------------------------------------------------------------------------
    def train_on_batch(
        self,
        x: Any,
        y: Any,
        optimizer: str | Optimizer | None = None,
        loss: str | Loss | None = None,
        trace: str | os.PathLike | TraceRecorder | None = None,
    ) -> float:
        """One update on exactly this batch; returns the cost of its forward pass (before the update).

        `trace="step.h5"` writes this step to a trace file; pass an open `TraceRecorder` to record many steps.
        """
        opt, loss_fn = self._resolve(optimizer, loss)
        xb, yb = self._prepare(x, y)
        with tracing(trace) as recorder:
            if recorder is not None:
                recorder.start(self)
            p = self.train_step(xb, yb, opt, loss_fn, record=recorder is not None and recorder.record)
            if recorder is not None:
                recorder.write_step(self, p)
        return float(p.cost)

    def fit(
        self,
        x: Any,
        y: Any = None,
        epochs: int = 1,
        batch_size: int = 64,
        optimizer: str | Optimizer | None = None,
        loss: str | Loss | None = None,
        shuffle: str | bool = "random",
        seed: int | None = 0,
        validation_data: tuple[Any, Any] | None = None,
        verbose: int = 1,
        callbacks: list[Callback] | None = None,
        distributed: bool | DataParallel = False,
        checkpoint: str | os.PathLike | None = None,
        run_dir: str | os.PathLike | RunDir | None = None,
        resume: bool = False,
        trace: str | os.PathLike | TraceRecorder | None = None,
        *,
        validation_split: float = 0.0,
        initial_epoch: int = 0,
        metrics: Sequence[str | Metric] | None = None,
        class_weight: Mapping[int, float] | None = None,
        sample_weight: Any = None,
        steps_per_epoch: int | None = None,
    ) -> History:
        """Train for `epochs` over minibatches of `batch_size`; per-epoch loss/accuracy (and val_*) in History.

        "loss" is the epoch's mean cost per sample (batch costs weighted by batch size, as Keras);
        "accuracy" counts argmax matches on the fly, before each batch's update. The dataset moves to
        the backend once; costs stay on the device and are read once per epoch. Each argument below is
        a part handed to the training loop (`xpnn.training`):

        - `callbacks=[...]`: Keras-style callbacks (`xpnn.training.Callback`).
        - `run_dir="runs/"`: a run folder (`RunDir`); `run_dir="runs/<id>", resume=True` continues it exactly.
        - `checkpoint=path`: `BackupAndRestore(path, delete_checkpoint=False)`: resume from that checkpoint if it
          exists (refusing other data or settings), rewrite it after every epoch.
        - `distributed=True`: data-parallel over the MPI world (`xpnn.distributed.DataParallel`); `batch_size`
          is the global batch and the run equals one process's.
        - `trace="run.h5"`: a `TraceRecorder` writing every step to HDF5 (`xpnn.trace`).
        - `verbose=1`: a progress line per epoch on a terminal, elsewhere one line per epoch; 0: silent.

        As in Keras, `validation_split=0.2` holds out the last 20 % of (x, y), before any shuffling, as the
        validation data (`validation_data` wins when both are given), and `initial_epoch` starts the epoch
        count there. `metrics` (else compile's, else accuracy for multi-class classification) are logged
        per epoch, `val_*` too; `sample_weight` (n,) and `class_weight` {class: weight} weigh each sample's
        loss and metrics, multiplied, as Keras. Each `seed` keeps one batch-order stream per model: calling
        `fit(epochs=1)` five times draws the same orders as `fit(epochs=5)`, not the first epoch's order five times.

        `x` may be a batch source for data larger than memory (Keras's habit): an `xpnn.datasets.PyDataset`
        (`__len__`, `__getitem__(i) -> (x, y)`; exact and resumable: its order comes from the seed), or a
        generator of (x, y) batches with `steps_per_epoch` (y left out); batches are checked and moved to the
        device in a background thread while the previous one trains. `validation_data` may be a source too.
        """
        epochs, batch_size = check_count("epochs", epochs, 0), check_count("batch_size", batch_size)
        initial_epoch = check_count("initial_epoch", initial_epoch, 0)
        if validation_split and validation_data is None:
            x, y, sample_weight, validation_data = split_validation(x, y, sample_weight, validation_split)
        strategy = None if distributed is False else as_data_parallel(distributed)
        if strategy is not None:  # join the world (and, on CuPy, pick this rank's GPU) before any data moves
            strategy.check_placement(self)
        feed = self._feed(x, y, batch_size, check_shuffle(shuffle), seed, sample_weight, class_weight, steps_per_epoch)
        opt, loss_fn = self._resolve(optimizer, loss)
        settings = FitSettings(epochs, batch_size, feed.shuffle, seed, opt, loss_fn, x, y, validation_data, verbose)
        val = validation_data
        if val is not None and not is_batch_source(val):
            if not isinstance(val, (tuple, list)) or len(val) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val) or a batch source.")
            val = self._prepare(*val)
        parts, loop_verbose = progress_callbacks(verbose, epochs, feed.steps())
        if run_dir is not None:
            parts += run_callbacks(run_dir, resume, verbose)
        elif resume:
            raise ValueError("resume=True needs run_dir, the run folder to continue (e.g. run_dir='runs/<run id>').")
        if checkpoint is not None:
            parts.append(BackupAndRestore(checkpoint, delete_checkpoint=False))
        rng = self._order_rngs.get(seed) or np.random.default_rng(seed)
        state = TrainState(epoch=initial_epoch, rng=rng, settings=settings)
        try:
            with tracing(trace) as recorder:
                parts += [recorder] if recorder is not None else []
                return train_epochs(self, feed, None, epochs, batch_size, opt, loss_fn, feed.shuffle, state, val,
                                    [*(callbacks or ()), *parts], loop_verbose, strategy,
                                    self.metrics_for(loss_fn, metrics))  # fmt: skip
        finally:
            self._order_rngs[seed] = state.rng  # the next fit with this seed continues the stream

    def _feed(
        self, x: Any, y: Any, batch_size: int, shuffle: str, seed: Any, sample_weight: Any, class_weight: Any,
        steps_per_epoch: int | None,
    ) -> ArrayFeed | SourceFeed:  # fmt: skip
        """fit's data as the loop takes it: arrays checked and moved to the device once, or a batch source."""
        if not is_batch_source(x) and steps_per_epoch is None:
            if y is None:
                raise ValueError("fit needs labels y with arrays x: fit(x, y, ...); a batch source brings its own.")
            xb, yb = self._prepare(x, y, seed)
            return ArrayFeed(xb, yb, batch_size, shuffle, self.sample_weights(y, len(xb), sample_weight, class_weight))
        source = as_source(x, steps_per_epoch)
        if sample_weight is not None or class_weight is not None:
            raise ValueError("a batch source weighs nothing: sample_weight and class_weight need (x, y) arrays.")
        if not self.built:
            if not is_indexed(source):
                raise ValueError(
                    "the model is not built and a generator cannot be peeked at without losing a batch: call "
                    "model.build(input_shape=...) first, or pass a PyDataset."
                )
            self.build(input_shape_from(source[0][0], self.layers), seed=seed)
        return SourceFeed(source, lambda xh, yh: self._prepare(xh, yh), shuffle)

    # ---- files ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, optimizer: Optimizer | None = None) -> None:
        """Write the model (architecture, weights, dtype, optimizer state) to an HDF5 file atomically (xpnn.io).

        A `.keras` path writes a Keras 3 archive instead (`to_keras`: layers and weights, no optimizer state);
        a folder is refused (Keras's `model.save` takes a file).
        """
        target = Path(path)
        if target.is_dir():
            raise ValueError(f"{target} is a folder; save to a file inside it, e.g. {target / 'model.h5'}.")
        if target.suffix == ".keras":
            self.to_keras(target)
            return
        io.save_model(self, target, optimizer)

    def to_keras(self, path: str | os.PathLike) -> Path:
        """A `.keras` archive that Keras 3's `keras.models.load_model` reads, same predictions (`xpnn.keras_format`)."""
        return save_keras(self, path)

    def to_onnx(self, path: str | os.PathLike, opset: int = 17, dtype: str | None = None) -> Path:
        """An ONNX graph of the model (NHWC input as here), for onnxruntime and friends; needs the `onnx` extra."""
        from xpnn.onnx_export import export_onnx  # imports the optional onnx package only when asked

        return export_onnx(self, path, opset=opset, dtype=dtype)


def load_model(path: str | os.PathLike | Path) -> Sequential:
    """The model saved at `path` as a `Sequential` (Keras's `keras.models.load_model`).

    An xpnn file comes back compiled with its saved optimizer (state included); a Keras `.keras` archive or a
    legacy Keras `.h5` model file is read by `xpnn.keras_format` (layers and weights).
    """
    if is_keras_file(path):
        model = keras_format.load_model(path, Sequential)
    else:
        model = io.load_model(path, cls=Sequential)
    assert isinstance(model, Sequential)
    return model
