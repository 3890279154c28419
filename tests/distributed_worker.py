"""A training run for the distributed tests, launched under mpiexec by tests/test_distributed.py.

Trains the reference network in float64 on the first --n embedded images and (on rank 0) saves the
history and final weights to --out. --fail makes rank --fail-rank raise, hang or die at --fail-epoch.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import xpnn
from xpnn.reference import reference_model, reference_optimizer
from xpnn.train import Callback


class Failure(Callback):
    """Makes one rank fail at the start of one epoch, in the way the test asks for."""

    def __init__(self, how: str, rank: int, epoch: int) -> None:
        self.how, self.rank, self.epoch = how, rank, epoch

    def on_epoch_begin(self, model, state) -> None:
        if xpnn.distributed.current().rank != self.rank or state.epoch + 1 != self.epoch:
            return
        if self.how == "raise":
            raise RuntimeError("injected failure")
        if self.how == "hang":
            time.sleep(600)
        if self.how == "kill":
            os._exit(9)


class StopOnRoot(Callback):
    """Rank 0 alone asks to stop after `epoch` (as a stuck-run check in its run folder would)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, model, state, logs) -> None:
        if xpnn.distributed.current().is_root and state.epoch >= self.epoch:
            state.stop = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--timeout", type=float, default=None)
    parser.add_argument("--rank1-seed", type=int, default=None, help="rank 1 uses this seed (a disagreeing rank)")
    parser.add_argument("--fail", choices=["raise", "hang", "kill"], default=None)
    parser.add_argument("--fail-rank", type=int, default=1)
    parser.add_argument("--fail-epoch", type=int, default=2)
    parser.add_argument("--stop-on-root-after", type=int, default=None)
    args = parser.parse_args()

    world = xpnn.distributed.init()
    if world.rank == 1 and args.rank1_seed is not None:
        args.seed = args.rank1_seed
    (x, y), _ = xpnn.datasets.load_embedded(n_train=args.n, n_test=6)
    model = reference_model("float64", seed=args.seed)
    callbacks = [] if args.fail is None else [Failure(args.fail, args.fail_rank, args.fail_epoch)]
    if args.stop_on_root_after is not None:
        callbacks.append(StopOnRoot(args.stop_on_root_after))
    history = model.fit(
        x, y, epochs=args.epochs, batch_size=args.batch_size, optimizer=reference_optimizer(), seed=args.seed,
        verbose=0, callbacks=callbacks, distributed=xpnn.distributed.DataParallel(args.timeout),
        checkpoint=args.checkpoint,
    )  # fmt: skip
    if args.out and xpnn.distributed.is_root():
        weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        np.savez(args.out, loss=history.history["loss"], accuracy=history.history["accuracy"], **weights)


if __name__ == "__main__":
    main()
