"""Train on your own images: a folder with one subfolder per class (Keras's image_dataset_from_directory).

python examples/own_image_folder.py path/to/folder      # folder/cats/*.png, folder/dogs/*.jpg, ...
python examples/own_image_folder.py --smoke             # writes a tiny folder of PNGs (Pillow) and trains 1 epoch

Classes are the subfolders, sorted by name; images are resized to --size. `xpnn.datasets.image_folder`
returns the images (uint8 NHWC) and int labels, shuffled with the seed as Keras's image_dataset_from_directory.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import xpnn
from xpnn import Adam, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential


def write_tiny_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 32) -> Path:
    """root/class_k/img_i.png: plain images whose brightest channel is the class (something learnable)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(classes):
        (root / f"class_{k}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            img[..., k % 3] += 150
            Image.fromarray(img).save(root / f"class_{k}" / f"img_{i}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, help="a folder with one subfolder of images per class")
    parser.add_argument("--size", type=int, default=64, help="images are resized to size x size")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="a generated folder of 36 PNGs, 1 epoch")
    args = parser.parse_args(argv)
    if args.folder is None and not args.smoke:
        parser.error("give a folder of images (one subfolder per class), or --smoke")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or write_tiny_folder(Path(tmp) / "images")
        size, epochs = (32, 1) if args.smoke else (args.size, args.epochs)
        x, y = xpnn.datasets.image_folder(folder, image_size=(size, size), color_mode="rgb", labels="inferred",
                                          seed=1)  # shuffled, so validation_split's last 20 % mixes the classes
    classes = int(y.max()) + 1
    print(f"{len(x)} images of {x.shape[1:]} in {classes} classes from {folder}")

    model = Sequential(
        [
            Conv2D(8, 3, padding="same"), ReLU(), MaxPool2D(2, strides=2),
            Conv2D(16, 3, padding="same"), ReLU(), MaxPool2D(2, strides=2),
            Flatten(), Dense(classes),
        ]
    ).build(x.shape[1:], seed=1)
    history = model.fit(x, y, epochs=epochs, batch_size=16, optimizer=Adam(0.003), seed=1, validation_split=0.2)
    print(f"final loss {history.history['loss'][-1]:.4f}, val_accuracy {history.history['val_accuracy'][-1]:.3f}")


if __name__ == "__main__":
    main()
