"""Train the reference network of SparkNeuralNets (xpnn's predecessor) on SIGNS and report how it did.

python examples/train.py                       # 25 epochs, float32, NumPy
XPNN_BACKEND=cupy python examples/train.py     # the same on a CUDA GPU
mpiexec -n 4 python examples/train.py --distributed   # data-parallel over 4 MPI ranks (pip install -e ".[mpi]")
python examples/train.py --smoke               # one epoch on 64 images: checks the script in seconds (CI)
"""

from __future__ import annotations

import argparse
import sys
import time

import xpnn
from xpnn.reference import BATCH_SIZE, EPOCHS, LEARNING_RATE, reference_model, reference_optimizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default=None, help="default: $XPNN_BACKEND or numpy")
    parser.add_argument("--data", default=None, help="folder holding train_signs.h5 and test_signs.h5")
    parser.add_argument("--embedded", action="store_true", help="use the embedded synthetic set even if SIGNS exists")
    parser.add_argument("--distributed", action="store_true", help="data-parallel over MPI (use mpiexec)")
    parser.add_argument("--smoke", action="store_true", help="one epoch on 64 train / 32 test images (CI check)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs = 1

    if args.distributed:  # before the backend and model: each rank picks its GPU here
        if args.backend:
            xpnn.set_backend(args.backend)
        world = xpnn.distributed.init()
        xpnn.distributed.root_print(f"distributed: {world.size} ranks, global batch {args.batch_size}")
    print = xpnn.distributed.root_print  # noqa: A001 - one log for N ranks (plain print without MPI)

    backend = xpnn.set_backend(args.backend) if args.backend else xpnn.get_backend()
    # --data or XPNN_DATA without SIGNS is an error (FileNotFoundError), never a fallback to other data.
    folder = None if args.embedded else xpnn.datasets.locate_signs(args.data)
    if folder is None:
        if not args.embedded:
            print("SIGNS not found (set XPNN_DATA or --data): training on the EMBEDDED synthetic hand-sign set.")
        sizes = {"n_train": 64, "n_test": 32} if args.smoke else {}
        (x_train, y_train), (x_test, y_test) = xpnn.datasets.load_embedded(**sizes)
    else:
        print(f"SIGNS from {folder}")
        (x_train, y_train), (x_test, y_test) = xpnn.datasets.load_signs(folder)
    if args.smoke:
        (x_train, y_train), (x_test, y_test) = (x_train[:64], y_train[:64]), (x_test[:32], y_test[:32])
    print(f"{len(x_train)} train / {len(x_test)} test images, backend {backend.name}, {args.dtype}, seed {args.seed}")

    model = reference_model(args.dtype, seed=args.seed)
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=reference_optimizer(args.learning_rate),
        loss="softmax_cross_entropy",
        seed=args.seed,
        validation_data=(x_test, y_test),
        distributed=args.distributed,
    )
    seconds = time.perf_counter() - start
    train = model.evaluate(x_train, y_train)
    test = model.evaluate(x_test, y_test)
    epochs = max(len(history.epoch), 1)
    print(f"train accuracy {train['accuracy']:.4f}  test accuracy {test['accuracy']:.4f}")
    print(f"{seconds:.1f} s in all, {seconds / epochs:.2f} s per epoch")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, FileNotFoundError) as exc:  # xpnn's errors say what to fix: no traceback
        sys.exit(f"error: {exc}")
