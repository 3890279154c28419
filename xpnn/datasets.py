"""Datasets: SIGNS, image folders, MNIST IDX files, CIFAR-10 (binary), batch sources, and the embedded stand-in."""

from xpnn.data.binary import load_cifar10, load_idx
from xpnn.data.detect import detect_data, load_data
from xpnn.data.embedded import load_embedded
from xpnn.data.images import Images, image_folder
from xpnn.data.signs import find_signs, load_signs, locate_signs
from xpnn.data.sources import GeneratorSource, PyDataset, is_batch_source, iter_batches

__all__ = [
    "GeneratorSource",
    "Images",
    "PyDataset",
    "detect_data",
    "find_signs",
    "image_folder",
    "is_batch_source",
    "iter_batches",
    "load_cifar10",
    "load_data",
    "load_embedded",
    "load_idx",
    "load_signs",
    "locate_signs",
]
