"""The embedded offline dataset: Fashion-MNIST from Debian's ``dataset-fashion-mnist``.

Debian's .gz files differ byte-wise from upstream's, so TFDS's checksum check
rejects them; we parse the IDX files ourselves (and fall back to
``keras.datasets.fashion_mnist`` only where that package is missing and a
network is available).
"""

import gzip
import os
import struct

import numpy as np

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
               "Shirt", "Sneaker", "Bag", "Ankle boot")
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
HOW_TO_GET = ("Install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
              "or pass data_dir= pointing at a folder with the four IDX .gz files.")


def _read_idx(path, expected_magic, expected_count):
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"Cannot read {path}: {e}. The file is truncated or corrupt; "
                         f"reinstall it. {HOW_TO_GET}") from e
    if len(raw) < 8:
        raise ValueError(f"{path} is truncated (no IDX header). {HOW_TO_GET}")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != expected_magic or count != expected_count:
        raise ValueError(f"{path} is not the expected IDX file (magic {magic}, "
                         f"{count} items; expected {expected_magic}, {expected_count}).")
    if expected_magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        data = np.frombuffer(raw, dtype=np.uint8, offset=16)
        shape = (count, rows, cols)
    else:
        data = np.frombuffer(raw, dtype=np.uint8, offset=8)
        shape = (count,)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {data.size} bytes of pixels/labels "
                         f"where {int(np.prod(shape))} were expected. {HOW_TO_GET}")
    return data.reshape(shape)


def load(split="train", data_dir=None):
    """``(images uint8 [N, 28, 28, 1], labels int32 [N])`` for ``split`` in train/test."""
    if split not in _FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    data_dir = data_dir or os.environ.get("KDZOO_FASHION_MNIST_DIR", DEBIAN_DIR)
    images_name, labels_name, count = _FILES[split]
    images_path = os.path.join(data_dir, images_name)
    labels_path = os.path.join(data_dir, labels_name)
    if not (os.path.exists(images_path) and os.path.exists(labels_path)):
        return _load_from_keras(split, data_dir)
    images = _read_idx(images_path, 2051, count)
    labels = _read_idx(labels_path, 2049, count)
    return images[..., None], labels.astype(np.int32)


def _load_from_keras(split, data_dir):
    try:
        import keras
        (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    except Exception as e:  # no network, no package: say how to get the data
        raise FileNotFoundError(
            f"Fashion-MNIST was not found in {data_dir} and could not be downloaded "
            f"({e.__class__.__name__}: {e}). {HOW_TO_GET}") from e
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    return images[..., None], labels.astype(np.int32)
