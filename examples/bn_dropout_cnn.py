"""A CNN with BatchNormalization and Dropout on SIGNS: three conv blocks, then Flatten, Dropout and Dense(6).

python examples/bn_dropout_cnn.py                 # 15 epochs on SIGNS (embedded stand-in if it is absent)
python examples/bn_dropout_cnn.py --seed 2        # another seed (weights, batch order, dropout masks)
python examples/bn_dropout_cnn.py --keras         # then the same net in tf.keras, same settings, side by side
python examples/bn_dropout_cnn.py --smoke         # a few images, one epoch: checks that it all runs

Each block is Conv2D(3×3, same, no bias) → BatchNormalization(momentum=0.9) → ReLU → MaxPool2D; the
third pools 4×4 to a 4·4·64 map, then Flatten → Dropout(0.3) → Dense(6). Adam(0.001), softmax
cross-entropy, minibatches of 32. A GlobalAveragePooling2D head instead of Flatten trains as well but its
inference-mode test accuracy swings between 0.2 and 0.7 from epoch to epoch, in tf.keras just as here;
BatchNormalization's default momentum 0.99 averages over ~100 steps, 3 epochs of SIGNS, hence 0.9.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import xpnn
from xpnn.layers import BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from xpnn.optimizers import Adam

FILTERS = (16, 32, 64)
POOLS = (2, 2, 4)
MOMENTUM = 0.9
DROPOUT = 0.3


def xpnn_model(dtype: str) -> xpnn.Sequential:
    layers = []
    for filters, pool in zip(FILTERS, POOLS):
        layers += [Conv2D(filters, 3, padding="same", use_bias=False), BatchNormalization(momentum=MOMENTUM)]
        layers += [ReLU(), MaxPool2D(pool)]
    return xpnn.Sequential([*layers, Flatten(), Dropout(DROPOUT), Dense(6)], dtype=dtype)


def keras_model(seed: int):
    """The same network in tf.keras (imported only here: TensorFlow is optional)."""
    import keras

    keras.utils.set_random_seed(seed)
    k = keras.layers
    layers = [keras.Input((64, 64, 3))]
    for filters, pool in zip(FILTERS, POOLS):
        layers += [k.Conv2D(filters, 3, padding="same", use_bias=False), k.BatchNormalization(momentum=MOMENTUM)]
        layers += [k.ReLU(), k.MaxPool2D(pool)]
    return keras.Sequential([*layers, k.Flatten(), k.Dropout(DROPOUT), k.Dense(6)])


def curve(history: dict[str, list[float]]) -> str:
    rows = zip(history["loss"], history["accuracy"], history["val_loss"], history["val_accuracy"])
    return "\n".join(
        f"  epoch {e:2d}  loss {lo:.4f}  acc {ac:.4f}  val_loss {vl:.4f}  val_acc {va:.4f}"
        for e, (lo, ac, vl, va) in enumerate(rows, 1)
    )


def run_keras(data, args) -> dict[str, list[float]]:
    import keras

    (x_train, y_train), (x_test, y_test) = data
    model = keras_model(args.seed)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train / 255.0,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_test / 255.0, y_test),
        verbose=0,
    )
    return history.history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--data", default=None, help="folder holding train_signs.h5 and test_signs.h5")
    parser.add_argument("--smoke", action="store_true", help="a few images and one epoch (embedded data if no SIGNS)")
    parser.add_argument("--keras", action="store_true", help="also train the same net in tf.keras and compare")
    args = parser.parse_args(argv)

    folder = xpnn.datasets.find_signs(args.data)
    if folder is None:
        print("SIGNS not found (set XPNN_DATA or --data): training on the EMBEDDED synthetic hand-sign set instead.")
        data = xpnn.datasets.load_embedded()
    else:
        data = xpnn.datasets.load_signs(folder)
    if args.smoke:
        (x_train, y_train), (x_test, y_test) = data
        data = (x_train[:48], y_train[:48]), (x_test[:16], y_test[:16])
        args.epochs = 1
    (x_train, y_train), (x_test, y_test) = data
    print(f"{len(x_train)} train / {len(x_test)} test images, {args.dtype}, seed {args.seed}")

    model = xpnn_model(args.dtype).build(x_train.shape[1:], seed=args.seed)
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=Adam(args.learning_rate),
        loss="softmax_cross_entropy",
        seed=args.seed,
        validation_data=(x_test, y_test),
        verbose=0,
    )
    seconds = time.perf_counter() - start
    test = model.evaluate(x_test, y_test)
    print(f"xpnn: test accuracy {test['accuracy']:.4f} ({seconds:.1f} s)\n{curve(history.history)}")
    if args.keras:
        start = time.perf_counter()
        keras_history = run_keras(data, args)
        seconds = time.perf_counter() - start
        print(f"keras: test accuracy {keras_history['val_accuracy'][-1]:.4f} ({seconds:.1f} s)\n{curve(keras_history)}")
    if not np.isfinite(history.history["loss"][-1]):
        sys.exit("error: training diverged")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, TypeError, FileNotFoundError) as exc:  # xpnn's errors say what to fix: no traceback
        sys.exit(f"error: {exc}")
