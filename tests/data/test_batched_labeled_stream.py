"""The supervised (labels / mixup) stream rendered per batch equals the per-image one.

``labeled_stream(batched_render=False)`` (crop_resize in a tf.data map) is the
reference for ``batched_render=True`` (kdzoo.data.batched_crops after batch).
"""

import numpy as np
import pytest
import tensorflow as tf

from kdzoo.data import batched_crops
from kdzoo.data.stream import labeled_stream
from helpers import smooth_images

TOL = 1e-3  # on [0, 255] pixels


def _batches(examples, steps=5, **kwargs):
    kwargs = dict(dict(num_classes=5, image_size=16, batch_size=8, seed=4, shuffle_buffer=12),
                  **kwargs)
    return [tf.nest.map_structure(lambda t: t.numpy(), b)
            for b in labeled_stream(examples, **kwargs).take(steps)]


def _examples(n=12, size=28):
    return tf.data.Dataset.from_tensor_slices((smooth_images(n, size), np.arange(n) % 5))


@pytest.mark.parametrize("kwargs", [
    dict(crop="inception", inception_area_range=(0.25, 1.0)),  # the study's "labels" run
    dict(crop="inception", mixup_alpha=1.0),                  # the "mixup" baseline
    dict(crop="random", initial_step=3),
    dict(crop="pad", pad_fill=128, image_size=28),            # the CIFAR / BYOT recipe
    dict(crop=None, flip=False),
])
def test_batched_equals_per_image(kwargs, monkeypatch):
    calls = []
    real = batched_crops.render_boxes
    monkeypatch.setattr(batched_crops, "render_boxes",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    old = _batches(_examples(), batched_render=False, **kwargs)
    assert not calls
    new = _batches(_examples(), batched_render=True, **kwargs)
    assert calls  # asked for, it renders per batch
    for (x_old, y_old), (x_new, y_new) in zip(old, new):
        assert x_old.shape == x_new.shape
        np.testing.assert_allclose(x_new, x_old, atol=TOL, rtol=0)
        np.testing.assert_allclose(y_new, y_old, atol=1e-6, rtol=0)
    assert not np.allclose(new[0][0], new[1][0])


def test_autoaugment_cutout_and_variable_sizes_stay_per_image(monkeypatch):
    calls = []
    real = batched_crops.render_boxes
    monkeypatch.setattr(batched_crops, "render_boxes",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    _batches(_examples(size=32), steps=1, crop="pad", image_size=32, autoaugment="cifar10",
             batched_render=True)
    _batches(_examples(size=32), steps=1, crop="pad", image_size=32, cutout=8,
             batched_render=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (int(rng.integers(16, 30)), 20, 3), dtype=np.uint8)
              for _ in range(12)]
    variable = tf.data.Dataset.from_generator(
        lambda: ((im, i % 5) for i, im in enumerate(images)),
        output_signature=(tf.TensorSpec([None, 20, 3], tf.uint8),
                          tf.TensorSpec([], tf.int64)))
    (x, _), = _batches(variable, steps=1, crop="inception", num_examples=12,
                       batched_render=True)
    assert x.shape == (8, 16, 16, 3)
    assert not calls
