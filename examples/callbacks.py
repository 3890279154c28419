"""Callbacks a Keras user reaches for: early stopping, checkpoints, and a learning-rate schedule.

python examples/callbacks.py            # up to 30 epochs on the embedded hand-sign set
python examples/callbacks.py --smoke    # 2 epochs on 64 images (CI)

`EarlyStopping`, `ModelCheckpoint` and `LearningRateScheduler` have Keras 3's names and arguments
(`keras.callbacks`); `BackupAndRestore` resumes after a crash.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import xpnn
import xpnn.callbacks
from xpnn import Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from xpnn.callbacks import EarlyStopping, LearningRateScheduler, ModelCheckpoint


def schedule(epoch: int, lr: float) -> float:
    """Keras's LearningRateScheduler form: keep the rate for 3 epochs, then shrink it 10 % per epoch."""
    return lr if epoch < 3 else lr * 0.9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 epochs on 64 images")
    args = parser.parse_args(argv)

    n_train, n_test, epochs = (64, 32, 2) if args.smoke else (600, 120, 30)
    (x, y), (xt, yt) = xpnn.datasets.load_embedded(n_train=n_train, n_test=n_test)
    model = Sequential(
        [Conv2D(8, 4, padding="same"), ReLU(), MaxPool2D(8, strides=8, padding="same"), Flatten(), Dense(6)]
    ).build((64, 64, 3), seed=1)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        callbacks = [
            EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True),
            ModelCheckpoint(str(folder / "best-{epoch:02d}-{val_loss:.2f}.h5"), monitor="val_loss",
                            save_best_only=True),
            LearningRateScheduler(schedule),
        ]
        history = model.fit(x, y, epochs=epochs, batch_size=32, optimizer=Adam(0.009), seed=1,
                            validation_data=(xt, yt), callbacks=callbacks)
        saved = sorted(p.name for p in folder.iterdir())
    print(f"trained {len(history.epoch)} of {epochs} epochs; best val_loss {min(history.history['val_loss']):.4f}")
    print(f"checkpoints written: {saved}")
    if not saved:
        sys.exit("error: ModelCheckpoint wrote no file")


if __name__ == "__main__":
    main()
