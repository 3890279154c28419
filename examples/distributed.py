"""Data-parallel training over MPI that ends with the weights of a single process.

mpiexec -n 2 python examples/distributed.py          # pip install -e ".[mpi]"; any MPI launcher (srun, ...)
mpiexec -n 2 python examples/distributed.py --smoke  # 1 epoch on 64 images (CI)
python examples/distributed.py --smoke               # no launcher: says so and trains in one process

`batch_size` is the GLOBAL batch: each of N ranks takes 1/N of every batch, and one all-reduce per step
hands every rank the batch-mean gradient, so N ranks equal one process to ~1e-14 in float64.
"""

from __future__ import annotations

import argparse
import sys

import xpnn
from xpnn import Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from xpnn.distributed.world import under_launcher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 64 images; one process if no launcher")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    n_train, epochs = (64, 1) if args.smoke else (600, args.epochs)

    distributed = under_launcher()
    if distributed:
        world = xpnn.distributed.init()  # first: joins the world (on GPUs it also picks this rank's device)
        xpnn.distributed.root_print(f"{world.size} ranks")
    elif args.smoke:
        print("no MPI launcher started this process (use `mpiexec -n 2 python examples/distributed.py`): "
              "training in one process (smoke mode).")
    else:
        sys.exit("error: start this under an MPI launcher: mpiexec -n 2 python examples/distributed.py "
                 "(or pass --smoke to run one process).")

    (x, y), (xt, yt) = xpnn.datasets.load_embedded(n_train=n_train, n_test=32)
    model = Sequential(
        [Conv2D(8, 4, padding="same"), ReLU(), MaxPool2D(8, strides=8, padding="same"), Flatten(), Dense(6)],
        dtype="float64",
    ).build((64, 64, 3), seed=1)
    history = model.fit(x, y, epochs=epochs, batch_size=32, optimizer=Adam(0.009), seed=1,
                        validation_data=(xt, yt), distributed=distributed, verbose=0)
    # Every rank holds the same weights; only rank 0 prints (plain print when there is no MPI world).
    xpnn.distributed.root_print(f"final loss {history.history['loss'][-1]:.15f}, "
                                f"val_accuracy {history.history['val_accuracy'][-1]:.3f}")


if __name__ == "__main__":
    main()
