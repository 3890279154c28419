"""Data-parallel training that equals one process: same batches, same mean gradient, same weights.

Each rank takes its slice of every global batch (`shard`), runs forward and backward on it, scales
its gradients and cost by local_n / batch_n, and one all-reduce (sum) of a single flat buffer gives
every rank the single-process batch mean. Rank 0's weights, optimizer state and RNG are broadcast
at the start, so the ranks stay identical; only rank 0 prints and runs `root_only` callbacks.
Anything that goes wrong on one rank mid-training aborts the whole job (MPI_Abort) after the rank
says what failed; a dead or hung rank is named by the collective deadline (see `comm.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
import traceback
import warnings
from typing import Any

import numpy as np

from xpnn.backends import get_backend
from xpnn.distributed.comm import MPIComm
from xpnn.distributed.config import check_agreement, data_fingerprint, describe_run
from xpnn.distributed.shard import describe_split, shard
from xpnn.distributed.world import DEFAULT_TIMEOUT, World, init
from xpnn.errors import DivergedError
from xpnn.losses import Loss
from xpnn.metrics import Metric
from xpnn.model import Model, Pass
from xpnn.optimizers import Optimizer
from xpnn.training.loop import Callback, History, Strategy, TrainState
from xpnn.types import Array


def _timeout(value: float | None) -> float:
    if value is None:
        value = float(os.environ.get("XPNN_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"timeout must be a number of seconds > 0; got timeout={value!r}.")
    return float(value)


class DataParallel(Strategy, Callback):
    """The distributed side of `fit(..., distributed=...)`: sharding, gradient all-reduce, rank-0 output.

    A `Strategy` the training loop is handed (as tf.distribute or Horovod wrap a loop), and a `Callback`
    for its epoch hooks (the weight-agreement check).

    `timeout` is how long (seconds) a rank waits in any collective before it names the ranks that did
    not arrive and aborts the job; default $XPNN_DIST_TIMEOUT or 300.
    """

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = _timeout(timeout)
        self.world: World | None = None
        self.mpi: MPIComm | None = None
        self.reducer: Any = None
        self.optimizer: Optimizer | None = None
        self.epoch = 0
        self.step = 0

    def connect(self) -> World:
        """Join the MPI world and set up the host and (on CuPy) NCCL communicators, once."""
        if self.world is None:
            self.world = init()
            self.mpi = MPIComm(self.world, self.timeout)
            try:  # a failure here (no NCCL, a CUDA error, the NCCL deadline) must not leave the others waiting
                if get_backend().name == "cupy":
                    from xpnn.distributed.nccl import NCCLReducer

                    self.reducer = NCCLReducer(self.mpi)
                else:
                    self.reducer = self.mpi
            except BaseException as exc:  # noqa: BLE001
                self.abort(exc)
                raise
        return self.world

    def check_placement(self, model: Model) -> None:
        """On CuPy, refuse a model whose weights sit on another GPU than this rank's (built before `init()`)."""
        world = self.connect()
        if get_backend().name != "cupy" or not model.built:
            return
        import cupy

        here = cupy.cuda.Device().id
        elsewhere = {int(p.device.id) for p in model.parameters()} - {here}
        if elsewhere:
            raise ValueError(
                f"rank {world.rank}: the model's weights are on GPU {sorted(elsewhere)} but this rank trains on GPU "
                f"{here}: the model was built before xpnn.distributed.init() chose the rank's GPU. Call "
                "xpnn.distributed.init() first, then build the model (or let fit build it)."
            )

    # ---- the Strategy hooks the training loop calls ---------------------------------------------
    shards = True  # each rank slices its part of every batch

    @property
    def is_root(self) -> bool:
        """True on rank 0 (the rank that prints, writes checkpoints and runs `root_only` callbacks)."""
        return self.connect().is_root

    def select(self, callbacks: list[Callback]) -> list[Callback]:
        """This rank's callbacks: `root_only` ones on rank 0 alone; this strategy first, the stop agreement last."""
        world = self.connect()
        assert self.mpi is not None
        kept = [cb for cb in callbacks if world.is_root or not getattr(cb, "root_only", False)]
        return [self, *kept, AgreeOnStop(self.mpi)]

    def begin(self, model: Model, x: Array, y: Array, validation: Any, state: TrainState) -> None:
        """Check that the ranks agree on model, data and settings, then give every rank rank 0's state."""
        world = self.connect()
        mpi = self.mpi
        assert mpi is not None and state.settings is not None
        modal = [layer.name for layer in model.layers if layer.takes_training]
        if modal:
            raise ValueError(
                f"data-parallel training of a model with {', '.join(sorted(set(modal)))} would not equal one process: "
                "each rank would see only its shard's batch statistics or draw its own dropout masks. Train it in "
                "one process (without distributed=True)."
            )
        s = state.settings
        self.optimizer = s.optimizer
        settings = {
            "epochs": s.epochs,
            "batch_size": s.batch_size,
            "shuffle": s.shuffle,
            "seed": s.seed,
            "optimizer": s.optimizer,
            "loss": s.loss,
            "samples": len(x),
            "validation": None if validation is None else [data_fingerprint(a) for a in validation],
        }
        check_agreement(mpi.allgather_object(describe_run(model, x, y, settings), "the start-up config check"))
        note = describe_split(s.batch_size, world.size)
        if note and world.is_root:
            warnings.warn(note, stacklevel=3)
        self.sync_from_root(model, state)

    def failed(self, exc: BaseException) -> None:
        """Any failure but a divergence (which every rank sees at once) leaves the others in a collective: abort."""
        if not isinstance(exc, DivergedError):
            self.abort(exc)

    def abort(self, exc: BaseException) -> None:
        """Say which rank failed and why, then end every rank (MPI_Abort)."""
        world = self.world
        assert world is not None and self.mpi is not None
        sys.stderr.write(
            f"xpnn.distributed: rank {world.rank} of {world.size} failed at epoch {self.epoch}, step {self.step}: "
            f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
            "xpnn.distributed: aborting all ranks (MPI_Abort).\n"
        )
        sys.stderr.flush()
        time.sleep(ABORT_GRACE)  # let the launcher forward this message before MPI_Abort tears the job down
        self.mpi.abort(1)
        os._exit(1)  # MPI_Abort may return before the launcher kills this process; never run on

    def sync_from_root(self, model: Model, state: TrainState) -> None:
        """Give every rank rank 0's weights, optimizer state, epoch, step, batch-order RNG and history."""
        assert self.mpi is not None and self.optimizer is not None
        backend = get_backend()
        opt_state = {
            k: [backend.to_host(a) for a in v] if isinstance(v, list) else v
            for k, v in self.optimizer.get_state().items()
        }
        payload = (model.get_weights(), opt_state, state.epoch, state.step, state.rng.bit_generator.state)
        payload = self.mpi.bcast_object(payload if self.mpi.world.is_root else None, "the start-up broadcast")
        if not self.mpi.world.is_root:
            weights, opt_state, state.epoch, state.step, rng_state = payload
            model.set_weights(weights)
            self.optimizer.set_state(opt_state)
            state.rng = np.random.default_rng()
            state.rng.bit_generator.state = rng_state
        history = self.mpi.bcast_object(state.history, "the start-up broadcast")
        state.history = history
        self.step = state.step

    # ---- hooks called by train_epochs ----------------------------------------------------------
    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This rank's slice of one global batch."""
        assert self.world is not None
        return shard(indices, self.world.rank, self.world.size)

    def run_pass(
        self, model: Model, x: Array, y: Array, loss: Loss, batch_n: int, record: bool, sample_weight: Any = None
    ) -> Pass:
        """Forward/backward on this rank's slice, then the all-reduce: grads and cost become the batch means.

        A loss over this rank's n_r samples is a mean (Keras's sum_over_batch_size, weighted or not) and
        the weight penalties count once per rank: scaled by n_r / batch_n and summed, both become the batch's.
        """
        xp = get_backend().xp
        self.step += 1
        if len(x):
            result = model.run_pass(x, y, loss, record=record, sample_weight=sample_weight)
        else:  # a short last batch can leave a rank empty: it adds zeros and still joins the all-reduce
            logits = xp.zeros((0, model.output_shape[-1]), dtype=model.dtype)
            result = Pass(xp.zeros((), model.dtype), logits, [xp.zeros_like(p) for p in model.parameters()])
        flat = xp.concatenate([g.reshape(-1) for g in result.grads] + [xp.reshape(result.cost, (1,))])
        flat *= len(x) / batch_n
        self.reducer.allreduce_sum(flat, f"the gradient all-reduce of epoch {self.epoch}, step {self.step}")
        grads, offset = [], 0
        for g in result.grads:
            grads.append(flat[offset : offset + g.size].reshape(g.shape))
            offset += g.size
        return dataclasses.replace(result, cost=flat[-1], grads=grads)

    def sum_metrics(self, metrics: list[Metric]) -> None:
        """Each metric's running total and count summed over the ranks (one small host all-reduce per epoch)."""
        assert self.mpi is not None
        if not metrics:
            return
        backend = get_backend()
        buf = np.array([float(v) for m in metrics for v in (m.total, m.count)], dtype=np.float64)
        self.mpi.allreduce_sum(buf, f"the metrics of epoch {self.epoch}")
        for i, m in enumerate(metrics):
            m.total = backend.asarray(buf[2 * i : 2 * i + 1].reshape(()))
            m.count = backend.asarray(buf[2 * i + 1 : 2 * i + 2].reshape(()))

    # ---- callback hooks ------------------------------------------------------------------------
    def on_epoch_begin(self, model: Model, state: TrainState) -> None:
        """Remember the epoch, for the failure messages that name it."""
        self.epoch = state.epoch + 1

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Check the ranks still hold identical weights; if the MPI sum rounded differently, resync from rank 0."""
        assert self.mpi is not None
        digest = hashlib.sha256(b"".join(w.tobytes() for w in model.get_weights())).hexdigest()
        digests = self.mpi.allgather_object(digest, f"the weight check of epoch {self.epoch}")
        if len(set(digests)) > 1:
            if self.mpi.world.is_root:
                warnings.warn(
                    f"after epoch {self.epoch} the ranks' weights differ in the last bits (the MPI library's "
                    "all-reduce rounds differently per rank); rank 0's weights and optimizer state were re-broadcast.",
                    stacklevel=2,
                )
            self.sync_from_root(model, state)


ABORT_GRACE = 1.0  # seconds; without it the launcher sometimes dropped the failing rank's last words


class AgreeOnStop(Callback):
    """Last at each epoch end: if a callback on any rank asked to stop (say, rank 0's stuck-run check),
    every rank stops after this epoch, so none waits alone in the next epoch's collectives."""

    def __init__(self, mpi: MPIComm) -> None:
        self.mpi = mpi

    def on_epoch_end(self, model: Model, state: TrainState, logs: dict[str, float]) -> None:
        """Stop every rank when any rank's callbacks asked to stop, so that no rank waits alone."""
        state.stop = any(self.mpi.allgather_object(bool(state.stop), "the stop check"))


_default: DataParallel | None = None


def as_data_parallel(spec: bool | DataParallel) -> DataParallel:
    """`fit`'s `distributed=` argument as a DataParallel: True gives a shared default one."""
    global _default
    if isinstance(spec, DataParallel):
        return spec
    if spec is True:
        if _default is None:
            _default = DataParallel()
        return _default
    raise TypeError(f"distributed must be True, False or an xpnn.distributed.DataParallel; got {spec!r}.")


class DistributedModel:
    """`wrap(model)`: the model, whose `fit` trains data-parallel over the MPI world; all else passes through.

    TF/Keras counterpart: tf.distribute.MultiWorkerMirroredStrategy's role.
    """

    def __init__(self, model: Model, parallel: DataParallel) -> None:
        self.model = model
        self.parallel = parallel

    def fit(self, *args: Any, **kwargs: Any) -> History:
        """`model.fit(...)` with this wrapper's `DataParallel` (and its timeout) as `distributed=`."""
        kwargs["distributed"] = self.parallel
        return self.model.fit(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def wrap(model: Model, timeout: float | None = None) -> DistributedModel:
    """`xpnn.distributed.wrap(model).fit(...)` is `model.fit(..., distributed=DataParallel(timeout))`.

    Where TensorFlow builds and fits the model under `strategy.scope()`, xpnn wraps the built model."""
    parallel = DataParallel(timeout)
    parallel.connect()
    return DistributedModel(model, parallel)
