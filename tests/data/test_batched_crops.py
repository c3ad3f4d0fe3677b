"""Batched box rendering (kdzoo.data.batched_crops) against the per-image path it replaces.

The reference is kdzoo.data.augment.crop_resize (tf.slice + tf.image.resize) and
maybe_flip, rendered one image at a time: independent code, so these numbers are
not copied from the code under test.
"""

import numpy as np
import pytest
import tensorflow as tf

from kdzoo.data import augment, batched_crops

TOL = 1e-3  # on [0, 255] pixels: float rounding only


def _per_image(images, boxes, size, flips, antialias):
    def one(args):
        image, box, flip = args
        view = augment.crop_resize(image, box, size, antialias=antialias, method="bilinear")
        return augment.maybe_flip(view, flip)
    spec = tf.TensorSpec([size, size, images.shape[-1]], tf.float32)
    return tf.map_fn(one, (tf.constant(images), tf.constant(boxes), tf.constant(flips)),
                     fn_output_signature=spec).numpy()


def _inception_boxes(images, seed, area_range):
    boxes = [augment.inception_crop_box(tf.constant(im), augment.make_key(seed, i), area_range)
             for i, im in enumerate(images)]
    return np.stack([b.numpy() for b in boxes]).astype(np.int32)


@pytest.mark.parametrize("antialias", [False, True])
def test_inception_boxes_match_per_image(antialias):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (300, 28, 28, 1)).astype(np.uint8)
    boxes = _inception_boxes(images, 3, (0.05, 1.0))
    flips = rng.random(300) < 0.5
    # the sample must hold up- and downsampling boxes and boxes touching the edges
    assert (boxes[:, 2] < 28).any() and (boxes[:, 2] == 28).any()
    assert (boxes[:, 0] == 0).any() and (boxes[:, 0] + boxes[:, 2] == 28).any()
    want = _per_image(images, boxes, 28, flips, antialias)
    got = batched_crops.render_boxes(images, boxes, 28, flips, antialias=antialias).numpy()
    assert got.shape == want.shape == (300, 28, 28, 1)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert want.std() > 10  # not a degenerate (constant) comparison


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("shape,size", [((28, 28, 1), 16), ((20, 33, 3), 40),
                                        ((64, 48, 3), 24), ((8, 8, 2), 8)])
def test_arbitrary_boxes_and_sizes(shape, size, antialias):
    """h < S, h > S, h == S, 1-pixel boxes, non-square images, several channels."""
    rng = np.random.default_rng(sum(shape) + size)
    n, (height, width, _) = 160, shape
    images = rng.integers(0, 256, (n,) + shape).astype(np.uint8)
    h = rng.integers(1, height + 1, n)
    w = rng.integers(1, width + 1, n)
    h[::5], w[1::5] = min(size, height), 1
    h[2::5], w[2::5] = height, width  # the whole image
    top = (rng.random(n) * (height - h + 1)).astype(int)
    left = (rng.random(n) * (width - w + 1)).astype(int)
    boxes = np.stack([top, left, h, w], 1).astype(np.int32)
    flips = rng.random(n) < 0.5
    want = _per_image(images, boxes, size, flips, antialias)
    got = batched_crops.render_boxes(images, boxes, size, flips, antialias=antialias).numpy()
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def test_no_flips_and_float_images():
    rng = np.random.default_rng(7)
    images = rng.uniform(-40, 300, (50, 28, 28, 1)).astype(np.float32)  # clipped to [0, 255]
    boxes = _inception_boxes(images, 4, (0.25, 1.0))
    want = _per_image(images, boxes, 20, np.zeros(50, bool), False)
    got = batched_crops.render_boxes(images, boxes, 20).numpy()
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert got.min() == 0.0 and got.max() == 255.0


def test_interpolation_rows_sum_to_one_inside_the_box():
    m = batched_crops.interpolation_matrix([3, 0], [5, 28], 28, 28).numpy()
    np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-6)
    assert (m[0][:, :3] == 0).all() and (m[0][:, 8:] == 0).all()


def test_variable_size_images_are_refused():
    spec = tf.TensorSpec([None, 28, 28, 1], tf.uint8)
    assert not batched_crops.eligible([None, None, 3])
    assert not batched_crops.eligible([28, 28, 1], method="area")
    assert batched_crops.eligible([28, 28, 1])
    fn = tf.function(lambda x: batched_crops.render_boxes(x, tf.zeros([1, 4], tf.int32), 8))
    with pytest.raises(ValueError, match="one static size"):
        fn.get_concrete_function(tf.TensorSpec([None, None, None, 1], tf.uint8))
    fn.get_concrete_function(spec)  # static H, W, C: accepted
