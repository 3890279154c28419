"""A CNN with BatchNormalization and Dropout on SIGNS: three conv blocks, global average pooling.

python examples/batchnorm_dropout_cnn.py            # 20 epochs on SIGNS (or the embedded set, and it says so)
python examples/batchnorm_dropout_cnn.py --smoke    # 1 epoch on 64 images (CI)

`fit` runs the layers in training mode (batch statistics, dropout masks from the model's seeded stream);
`evaluate` and `predict` in inference mode (moving statistics, no dropout). Uses issue 14's layers; on an
xpnn without them the script says so and exits with status 77.
"""
# verify after merge: names and arguments are issue 14's (Keras 3's).

from __future__ import annotations

import argparse
import sys

import xpnn
import xpnn.layers
from xpnn import Adam, Conv2D, Dense, MaxPool2D, ReLU, Sequential

SKIP = 77
NEEDED = ("BatchNormalization", "Dropout", "GlobalAveragePooling2D")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch on 64 images")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    missing = [name for name in NEEDED if not hasattr(xpnn.layers, name)]
    if missing:
        print(f"skipped: this example needs xpnn.layers.{', '.join(missing)} (issue 14), which this xpnn lacks.")
        sys.exit(SKIP)
    from xpnn.layers import BatchNormalization, Dropout, GlobalAveragePooling2D

    folder = None if args.smoke else xpnn.datasets.locate_signs()
    if folder is None:
        if not args.smoke:
            print("SIGNS not found (set XPNN_DATA): training on the EMBEDDED synthetic hand-sign set.")
        (x, y), (xt, yt) = xpnn.datasets.load_embedded(n_train=64 if args.smoke else 600, n_test=32)
    else:
        (x, y), (xt, yt) = xpnn.datasets.load_signs(folder)

    def block(filters: int) -> list:
        return [Conv2D(filters, 3, padding="same"), BatchNormalization(), ReLU(), MaxPool2D(2, strides=2)]

    model = Sequential(
        [*block(16), *block(32), *block(64), GlobalAveragePooling2D(), Dropout(0.3, seed=args.seed), Dense(6)]
    ).build((64, 64, 3), seed=args.seed)
    model.summary()
    history = model.fit(x, y, epochs=1 if args.smoke else args.epochs, batch_size=32, optimizer=Adam(0.001),
                        seed=args.seed, validation_data=(xt, yt))
    test = model.evaluate(xt, yt)
    print(f"final loss {history.history['loss'][-1]:.4f}; test accuracy {test['accuracy']:.4f} (inference mode)")


if __name__ == "__main__":
    main()
