"""Seeded, stateless image augmentation for distillation (Beyer et al. 2022).

Every random decision comes from a stateless op keyed by an explicit
``[2]``-int64 key, built with :func:`make_key` from ``(seed, epoch, index)``
(per image) or ``(seed, epoch, step)`` (per batch). The same key always gives
the same crop, flip and mixup ratio, on any machine and after a resume; no
global RNG state is touched.

Crops are described by **boxes** ``[offset_y, offset_x, height, width]``
(int32, in source pixels). Sampling a box and rendering it are separate steps,
so a teacher can render *the same box* at its own resolution
(``crop_resize(image, box, teacher_size)``) while the student renders it at
its size: the paper's teacher-at-384 / student-at-224 setting.

Images are raw ``[H, W, C]`` pixels (uint8 or float); rendered views are
float32 in [0, 255]. Per-image functions work on images of any size, so they
run inside ``tf.data.Dataset.map`` before batching; :func:`mixup` is the one
batch-level op.
"""

import tensorflow as tf

# Salts that separate the random streams drawn from one (seed, epoch, index).
STUDENT_CROP = 1
TEACHER_CROP = 2
STUDENT_FLIP = 3
TEACHER_FLIP = 4
MIXUP = 5
ENSEMBLE = 6
SHUFFLE = 7

INCEPTION_AREA_RANGE = (0.05, 1.0)       # big_vision inception_crop defaults
INCEPTION_ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_FRACTION = 0.875                     # 224 / 256: resize_small(256) | crop(224)


def make_key(seed, *data):
    """A stateless-RNG key (``[2]`` int64) from ``seed`` folded with ``data`` in order.

    ``make_key(seed, epoch, index)`` keys one image of one epoch;
    ``make_key(key, salt)`` derives an independent sub-stream from a key.
    """
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        key = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x6B647A6F6F, tf.int64)])
    else:
        key = tf.cast(seed, tf.int64)
    for value in data:
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(value, tf.int64))
    return key


def image_hw(image):
    """``[height, width]`` (int32) of an ``[H, W, C]`` image."""
    return tf.shape(image)[:2]


def check_min_size(image, min_size, what="crop"):
    """Fail clearly if the image is smaller than ``min_size`` on a side.

    Raises ``ValueError`` at trace time when the size is static, otherwise an
    ``InvalidArgumentError`` with the same message when the op runs.
    """
    message = (f"Image smaller than the {what} size {min_size}: kdzoo's train views need "
               f"images of at least {min_size}x{min_size} pixels. Resize your images "
               "first or lower image_size.")
    static = image.shape[:2]
    if static[0] is not None and static[1] is not None:
        if min(static[0], static[1]) < min_size:
            raise ValueError(f"{message} Got {static[0]}x{static[1]}.")
        return image
    with tf.control_dependencies([tf.debugging.assert_greater_equal(
            tf.reduce_min(image_hw(image)), tf.cast(min_size, tf.int32), message=message)]):
        return tf.identity(image)


def full_box(image):
    hw = image_hw(image)
    return tf.stack([0, 0, hw[0], hw[1]])


def central_crop_box(image, fraction=CROP_FRACTION):
    """The central square whose side is ``fraction`` of the image's short side."""
    hw = image_hw(image)
    side = tf.maximum(1, tf.cast(tf.round(fraction * tf.cast(tf.reduce_min(hw), tf.float32)),
                                 tf.int32))
    return tf.stack([(hw[0] - side) // 2, (hw[1] - side) // 2, side, side])


def random_crop_box(image, key, fraction=CROP_FRACTION):
    """A square of side ``fraction`` x short side at a uniformly random position.

    The paper's mild "random crop" (``rc``): like ``resize_small(256)`` then a
    random 224 crop, but expressed in source pixels so it can be rendered at
    any resolution.
    """
    hw = image_hw(image)
    side = tf.maximum(1, tf.cast(tf.round(fraction * tf.cast(tf.reduce_min(hw), tf.float32)),
                                 tf.int32))
    offsets = tf.random.stateless_uniform(
        [2], seed=key, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    offsets = offsets % (hw - side + 1)
    return tf.stack([offsets[0], offsets[1], side, side])


def inception_crop_box(image, key, area_range=INCEPTION_AREA_RANGE,
                       aspect_ratio_range=INCEPTION_ASPECT_RANGE):
    """An Inception-style crop (Szegedy et al. 2015): 5-100% of the area, aspect 3/4-4/3."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4], tf.float32), seed=key,
        min_object_covered=0.0, aspect_ratio_range=list(aspect_ratio_range),
        area_range=list(area_range), max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def crop_resize(image, box, size, antialias=True, method="bilinear"):
    """Render ``box`` of ``image`` as a ``size`` x ``size`` float32 view in [0, 255].

    ``method`` / ``antialias`` as in ``tf.image.resize``. The train views use
    big_vision's choices (see :func:`train_resize`); the defaults here
    (antialiased bilinear) are kdzoo's general-purpose rendering.
    """
    box = tf.cast(box, tf.int32)
    crop = tf.slice(image, tf.stack([box[0], box[1], 0]), tf.stack([box[2], box[3], -1]))
    view = tf.image.resize(tf.cast(crop, tf.float32), [size, size], method=method,
                           antialias=antialias)
    return tf.clip_by_value(view, 0.0, 255.0)


def train_resize(kind, antialias=False):
    """``(method, antialias)`` for rendering a train view of crop ``kind``.

    ``antialias=False`` (the default) follows big_vision ``pp/ops_image.py``:
    inception crops (``"ic"``, ``get_inception_crop``) and whole-image resizes
    (``"rs"``, ``get_resize``) are plain bilinear without antialiasing; the
    short-side crops (``"rc"``, ``"cc"``: ``resize_small`` then a crop) use
    ``resize_small``'s default area resampling. ``antialias=True`` renders
    every kind with antialiased bilinear (kdzoo's earlier rendering).
    """
    if antialias:
        return "bilinear", True
    if kind in ("rc", "cc"):
        return "area", False
    return "bilinear", False


def resize(image, size, antialias=True, method="bilinear"):
    """The whole image squashed to ``size`` x ``size`` (the paper's ``fix/rs``)."""
    return crop_resize(image, full_box(image), size, antialias=antialias, method=method)


def flip_decision(key):
    """True with probability 1/2 (a scalar bool tensor)."""
    return tf.random.stateless_uniform([], seed=key) < 0.5


def maybe_flip(view, flip):
    """``view`` mirrored left-right where ``flip`` is True."""
    return tf.where(flip, tf.reverse(view, axis=[1]), view)


def random_flip(view, key):
    return maybe_flip(view, flip_decision(key))


def beta_sample(key, alpha):
    """One Beta(alpha, alpha) sample, statelessly (via two gamma draws)."""
    gammas = tf.random.stateless_gamma([2], seed=key, alpha=tf.cast(alpha, tf.float32))
    return gammas[0] / tf.maximum(gammas[0] + gammas[1], 1e-12)


def mixup_ratio(key, alpha=1.0):
    """The batch's mixup ratio: ``max(r, 1 - r)`` with ``r ~ Beta(alpha, alpha)``.

    As big_vision's ``utils.get_mixup`` (``a = jnp.maximum(a, 1.0 - a)``): the
    rolled partner never outweighs the image itself, so the ratio lies in
    [0.5, 1] (uniform there for ``alpha = 1``).
    """
    r = beta_sample(key, alpha)
    return tf.maximum(r, 1.0 - r)


def mixup(views, key, alpha=1.0):
    """Batch mixup as in big_vision: one ratio for the batch, partner = batch rolled by 1.

    ``views`` is a tensor ``[B, ...]`` or a list/dict of them (e.g. the student
    and teacher views of one batch); all are mixed with the *same* ratio
    (:func:`mixup_ratio`, >= 0.5) and partner. Returns ``(mixed, ratio)``.
    """
    ratio = mixup_ratio(key, alpha)

    def mix(x):
        x = tf.cast(x, tf.float32)
        return ratio * x + (1.0 - ratio) * tf.roll(x, shift=1, axis=0)

    return tf.nest.map_structure(mix, views), ratio
