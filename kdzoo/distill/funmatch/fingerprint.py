"""Fingerprints of what a teacher cache was built from: the teachers and the images.

A cache is only valid for the very function that produced it and the very
images it saw. Weights alone do not pin the function down: the same weights
behind another ``preprocess`` scale, activation or dtype policy give other
logits. So a teacher is fingerprinted by its architecture config (every
layer's settings, including preprocessing) *and* its weights. Layer names are
replaced by their position (auto-generated names such as ``conv2d_7`` differ
between two builds of the same model).

Images are fingerprinted the same way whether they come as an array or a
``tf.data.Dataset``: the number of images, the element spec (dtype and
shape) of one image, and the sha256 of the first :data:`SAMPLE` images'
bytes. Arrays additionally get a sha256 of all their bytes (cheap: they are
in memory).
"""

import hashlib
import json

import numpy as np
import tensorflow as tf

SAMPLE = 32  # images hashed from the start of the stream


def _canonical(value, names):
    if isinstance(value, dict):
        return {k: _canonical(v, names) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, names) for v in value]
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, float) and value != value:
        return "nan"
    return value


def architecture_fingerprint(model):
    """sha256 of ``model``'s config with layer names replaced by their position."""
    names = {layer.name: f"<layer {i}>" for i, layer in enumerate(model.layers)}
    names[model.name] = "<model>"
    try:
        config = model.get_config()
    except NotImplementedError:  # a subclassed model without get_config
        config = {"class": f"{type(model).__module__}.{type(model).__qualname__}",
                  "layers": [type(layer).__qualname__ for layer in model.layers]}
    config = {"class": type(model).__qualname__, "config": config,
              "dtype_policy": str(getattr(getattr(model, "dtype_policy", None), "name", ""))}
    text = json.dumps(_canonical(config, names), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def weights_fingerprint(model):
    """sha256 of a model's weights (shapes, dtypes and values, in order; not names)."""
    h = hashlib.sha256()
    for w in model.weights:
        value = np.ascontiguousarray(np.asarray(w.numpy()))
        h.update(f"{value.dtype.str}{value.shape};".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def array_fingerprint(images):
    """sha256 of all bytes of an array (None for a dataset)."""
    if isinstance(images, np.ndarray) or tf.is_tensor(images):
        a = np.ascontiguousarray(np.asarray(images))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
        return h.hexdigest()
    return None


def single_images(images):
    """Arrays or datasets of images / (image, label) / {"image": ...} -> one image each."""
    if isinstance(images, np.ndarray) or tf.is_tensor(images):
        images = tf.data.Dataset.from_tensor_slices(images)
    spec = images.element_spec
    if isinstance(spec, (tuple, list)):
        images = images.map(lambda *e: e[0])
    elif isinstance(spec, dict):
        images = images.map(lambda e: e["image"])
    if images.element_spec.shape.rank == 4:
        images = images.unbatch()
    return images


def images_fingerprint(images, count):
    """``{"count", "element_spec", "sample_sha256"}`` of the train images (any form)."""
    dataset = single_images(images)
    spec = dataset.element_spec
    h = hashlib.sha256()
    for image in dataset.take(SAMPLE).as_numpy_iterator():
        a = np.ascontiguousarray(image)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return {"count": None if count is None else int(count),
            "element_spec": f"{spec.dtype.name}{list(spec.shape)}",
            "sample_sha256": h.hexdigest()}
