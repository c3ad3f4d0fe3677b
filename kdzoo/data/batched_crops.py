"""Render a whole batch of crop boxes in one vectorised op (issue 23: input speed).

Why: :func:`kdzoo.data.augment.crop_resize` + :func:`~kdzoo.data.augment.maybe_flip`
render one view with about 15 small ops (slice, resize, clip, flip); inside
``tf.data.Dataset.map`` that is 128 maps per step of batch 128, and on a 2-core
machine those maps and the train step starve each other (``docs/speed.md``).
Here the boxes are still sampled per image (keyed exactly as before), and only
the rendering moves after ``batch``: a handful of ops per *batch*.

How: a bilinear resize of a crop is separable. Output row ``i`` of a crop of
height ``h`` rendered at ``S`` rows mixes two source rows, so the whole resize
is ``view = Ry @ crop @ Rx^T`` with interpolation matrices ``Ry [S, h]`` and
``Rx [S, w]``. Built on the full image (columns outside the box are zero), the
crop needs no slice: ``view[b] = Ry[b] @ image[b] @ Rx[b]^T`` for every image
of the batch at once (two batched matmuls). A flip reverses
``Rx``'s rows. The weights follow TensorFlow's kernels exactly:

* ``antialias=False`` (``ResizeBilinear`` with ``half_pixel_centers``): source
  coordinate ``s = (i + 0.5) * (h / S) - 0.5`` (float32), rows
  ``max(floor(s), 0)`` and ``min(ceil(s), h - 1)``, weight ``s - floor(s)`` on
  the upper one;
* ``antialias=True`` (``ScaleAndTranslate`` with the triangle kernel): centre
  ``c = (i + 0.5) * (h / S)``, kernel width ``k = max(h / S, 1)``, weight of
  source row ``j`` ``max(0, 1 - |j + 0.5 - c| / k)``, normalised over the rows
  of the crop.

So the batched views equal the per-image ones up to float rounding (tests in
``tests/data/test_batched_crops.py`` compare them on hundreds of random boxes).

Where it applies: bilinear rendering (either ``antialias``) of images that all
share one static size (e.g. Fashion-MNIST, CIFAR arrays), since a batch must be
one ``[B, H, W, C]`` tensor. Area resampling (the ``rc`` / ``cc`` train views)
and datasets of variable-size images (most TFDS sets) keep the per-image path:
:func:`eligible` says which.
"""

import tensorflow as tf

__all__ = ["eligible", "interpolation_matrix", "render_boxes"]


def eligible(image_shape, method="bilinear"):
    """True when boxes of images of ``image_shape`` can be rendered batched with ``method``.

    ``image_shape``: the static shape of one source image (``tf.TensorShape`` or
    a tuple); its height, width and channels must all be known.
    """
    shape = tf.TensorShape(image_shape)
    return method == "bilinear" and shape.rank == 3 and shape.is_fully_defined()


def interpolation_matrix(offset, length, out_size, in_size, antialias=False):
    """``[B, out_size, in_size]`` float32 weights resampling ``[offset, offset + length)``.

    Row ``i`` of matrix ``b`` holds the weights of the source pixels
    ``0 .. in_size - 1`` for output pixel ``i`` of box ``b`` (zero outside the
    box), as ``tf.image.resize(..., "bilinear", antialias=antialias)`` computes
    them for the cropped length (see the module docstring).

    Args:
      offset, length: ``[B]`` int box starts and lengths along one axis
        (``length >= 1``, ``offset + length <= in_size``).
      out_size: the rendered side (a Python int).
      in_size: the source image's side along that axis (a Python int).
    """
    if antialias:
        offset = tf.cast(offset, tf.int32)[:, None, None]                 # [B, 1, 1]
        length = tf.cast(length, tf.int32)[:, None, None]
        length_f = tf.cast(length, tf.float32)
        out = tf.range(out_size, dtype=tf.float32)[None, :, None]         # [1, S, 1]
        src = tf.range(in_size, dtype=tf.int32)[None, None, :] - offset   # crop coords
        # As ScaleAndTranslate computes them, in float32: scale = S / h, then its inverse.
        inv_scale = 1.0 / (float(out_size) / length_f)
        centre = (out + 0.5) * inv_scale
        one_over_kernel = 1.0 / tf.maximum(inv_scale, 1.0)
        inside = (src >= 0) & (src < length)
        pos = tf.cast(src, tf.float32) + 0.5 - centre
        w = tf.where(inside, tf.maximum(0.0, 1.0 - tf.abs(pos * one_over_kernel)), 0.0)
        total = tf.reduce_sum(w, axis=-1, keepdims=True)
        return w * (1.0 / tf.where(total > 0, total, 1.0))
    # ResizeBilinear: two source pixels per output pixel, so two one-hot rows (the
    # cheapest build: half the CPU of comparing every source index, issue 23).
    offset = tf.cast(offset, tf.int32)[:, None]                           # [B, 1]
    length = tf.cast(length, tf.int32)[:, None]
    out = tf.range(out_size, dtype=tf.float32)[None, :]                   # [1, S]
    s = (out + 0.5) * (tf.cast(length, tf.float32) / float(out_size)) - 0.5  # float32, as TF
    floor = tf.floor(s)
    lerp = (s - floor)[..., None]
    lower = tf.maximum(tf.cast(floor, tf.int32), 0) + offset
    upper = tf.minimum(tf.cast(tf.math.ceil(s), tf.int32), length - 1) + offset
    # lower == upper: the two weights add to 1 on one pixel
    return tf.one_hot(lower, in_size) * (1.0 - lerp) + tf.one_hot(upper, in_size) * lerp


def render_boxes(images, boxes, size, flips=None, antialias=False):
    """Boxes of a batch rendered as ``[B, size, size, C]`` float32 views in [0, 255].

    Equal (up to float rounding) to ``maybe_flip(crop_resize(images[b], boxes[b],
    size, antialias=antialias, method="bilinear"), flips[b])`` for every ``b``.

    Args:
      images: ``[B, H, W, C]`` raw pixels (any real dtype) of one static size.
      boxes: ``[B, 4]`` int ``[top, left, height, width]`` in source pixels.
      size: the side of the square views (a Python int).
      flips: ``[B]`` bool, mirror view ``b`` left-right; None: no flips.
      antialias: as ``tf.image.resize``'s (see the module docstring).
    """
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or not images.shape[1:].is_fully_defined():
        raise ValueError("render_boxes needs images [B, H, W, C] of one static size; got "
                         f"shape {images.shape}. Variable-size images must be rendered per "
                         "image (kdzoo.data.augment.crop_resize).")
    size = int(size)
    height, width = int(images.shape[1]), int(images.shape[2])
    boxes = tf.cast(boxes, tf.int32)
    ry = interpolation_matrix(boxes[:, 0], boxes[:, 2], size, height, antialias)
    rx = interpolation_matrix(boxes[:, 1], boxes[:, 3], size, width, antialias)
    if flips is not None:
        rx = tf.where(tf.reshape(tf.cast(flips, tf.bool), [-1, 1, 1]),
                      tf.reverse(rx, axis=[1]), rx)
    # [B, C, H, W]: two batched matmuls (half the CPU of an einsum over [B, H, W, C]).
    pixels = tf.transpose(tf.cast(images, tf.float32), [0, 3, 1, 2])
    views = tf.matmul(tf.matmul(ry[:, None], pixels), rx[:, None], transpose_b=True)
    return tf.clip_by_value(tf.transpose(views, [0, 2, 3, 1]), 0.0, 255.0)
