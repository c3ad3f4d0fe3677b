"""The one deterministic train stream: data epochs back to back, cut into batches.

Why one stream, counted in steps: the authors' trainer (big_vision
``trainers/proj/distill/distill.py``) runs ``total_steps = max(round(epochs * N /
batch), 1)`` steps (big_vision ``utils.steps``) over an input pipeline that
repeats the shuffled split forever and batches *across* epoch boundaries. No
image is dropped at the end of an epoch: a partial batch continues into the next
epoch. With flowers102 (N = 1,020, batch 512) a per-epoch ``drop_remainder``
would drop 508 images every epoch and run 10,000 steps where the paper runs
19,922.

Keys (pure functions of the seed, so any step can be reproduced):

* data epoch ``e`` is shuffled with the key ``(seed, SHUFFLE, e)``;
* image ``i`` of data epoch ``e`` is augmented with ``(seed, e, i)``;
* batch-level augmentation (mixup) of global step ``s`` uses ``(seed, s)``.

Resuming at step ``s`` starts the stream at image position ``s * batch``: data
epoch ``(s * batch) // N``, skipping ``(s * batch) % N`` of its images (before
they are augmented, so a skip costs reading, never rendering). The resumed
stream is the uninterrupted one from step ``s`` on, whatever ``s`` is.

FunMatch (:meth:`kdzoo.distill.FunMatchDistiller.make_train_dataset`) and the
supervised runs (:func:`kdzoo.train.labeled_stream`) both build on
:func:`train_stream`.
"""

import collections
import numbers

import numpy as np
import tensorflow as tf

from kdzoo.data import augment

__all__ = ["restored_epoch", "labeled_stream", "total_steps", "start_position", "train_stream", "image_dataset", "count",
           "funmatch_stream", "StreamInfo"]

_AUTOTUNE = tf.data.AUTOTUNE


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def total_steps(epochs, num_examples, batch_size):
    """The authors' step count: ``max(round(epochs * N / batch), 1)`` (big_vision ``utils.steps``).

    ``epochs`` may be fractional. Python's ``round`` (half to even), as big_vision.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Real) or not epochs > 0:
        raise ValueError(f"epochs must be a positive number, got {epochs!r}.")
    n = _positive_int(num_examples, "num_examples")
    b = _positive_int(batch_size, "batch_size")
    return max(round(epochs * n / b), 1)


def start_position(step, batch_size, num_examples):
    """``(data epoch, images to skip in it)`` where global step ``step`` begins."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"initial_step must be an int >= 0, got {step!r}.")
    position = int(step) * int(batch_size)
    return position // int(num_examples), position % int(num_examples)


def _shuffled(ds, buffer, seed, epoch):
    # One int64 drawn from the whole key: the key's first element alone does not depend
    # on the epoch (fold_in changes the second), which once gave every epoch one order.
    shuffle_seed = tf.random.stateless_uniform(
        [], augment.make_key(seed, augment.SHUFFLE, epoch), minval=None, maxval=None,
        dtype=tf.int64)
    # tf.data pairs an op seed with the graph's global seed; pin the latter (in this
    # traced function only) so the order depends on (seed, epoch) alone, never on
    # tf.random.set_seed / keras.utils.set_random_seed.
    graph = tf.compat.v1.get_default_graph()
    global_seed = graph.seed
    graph.seed = 1
    try:
        return ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
    finally:
        graph.seed = global_seed


def train_stream(base, *, batch_size, seed, per_image, num_examples=None, per_batch=None,
                 initial_step=0, shuffle_buffer=0):
    """An endless batched stream over data epochs of ``base``, from ``initial_step`` on.

    Args:
      base: a finite ``tf.data.Dataset`` in a fixed order; its elements are tuples
        whose first entry is the image index (``dataset.enumerate()``-style).
      batch_size: images per step (batches cross epoch boundaries; none is partial).
      seed: the stream's seed (shuffling; ``per_image`` keys its own augmentation).
      per_image: ``fn(epoch, *element) -> element`` run in a parallel,
        order-preserving map; ``epoch`` is the data epoch (int64 scalar).
      num_examples: ``N``, the elements of one epoch. ``None`` (unknown) allows
        only ``initial_step=0``.
      per_batch: ``fn(step, batch) -> batch`` with the global step (int64), e.g. mixup.
      initial_step: the global step the stream starts at.
      shuffle_buffer: per-epoch shuffle buffer (0 or 1: the stored order).
    """
    batch_size = _positive_int(batch_size, "batch_size")
    initial_step = int(initial_step)
    if num_examples is None:
        if initial_step:
            raise ValueError("The number of train images is unknown, so the stream cannot "
                             f"start at step {initial_step}; pass num_images=.")
        first_epoch, skip = 0, 0
    else:
        first_epoch, skip = start_position(initial_step, batch_size, num_examples)
    buffer = int(shuffle_buffer or 0)
    if num_examples is not None:
        buffer = min(buffer, int(num_examples))

    def one_epoch(epoch):  # traced by flat_map: every epoch's shuffle is built alike
        ds = base
        if buffer > 1:
            ds = _shuffled(ds, buffer, seed, epoch)
        if skip:
            ds = ds.skip(tf.where(tf.equal(epoch, first_epoch), tf.constant(skip, tf.int64),
                                  tf.constant(0, tf.int64)))
        return ds.map(lambda *element: (epoch, *element))

    ds = tf.data.Dataset.counter(start=first_epoch).flat_map(one_epoch)
    ds = ds.map(per_image, num_parallel_calls=_AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if per_batch is not None:
        ds = ds.enumerate(start=initial_step).map(per_batch, num_parallel_calls=_AUTOTUNE,
                                                  deterministic=True)
    return ds.prefetch(_AUTOTUNE)


def image_dataset(images, channels=None, min_side=None):
    """A dataset of single raw uint8 images ``[H, W, C]`` from what a user gave.

    Accepts an array ``[N, H, W, C]`` or a dataset of ``image``, ``(image, label,
    ...)`` or ``{"image": ...}`` elements, unbatched or batched.
    """
    if isinstance(images, np.ndarray) or tf.is_tensor(images):
        images = tf.data.Dataset.from_tensor_slices(images)
    if not isinstance(images, tf.data.Dataset):
        raise TypeError("Train images must be a tf.data.Dataset or an array "
                        f"[N, H, W, C]; got {type(images).__name__}.")
    spec = images.element_spec
    if isinstance(spec, (tuple, list)):
        images = images.map(lambda *e: e[0])  # (images, labels[, ...]): labels unused
        spec = images.element_spec
    elif isinstance(spec, dict):
        if "image" not in spec:
            raise ValueError(f"Dict elements need an 'image' entry; got keys {list(spec)}.")
        images = images.map(lambda e: e["image"])
        spec = images.element_spec
    if not isinstance(spec, tf.TensorSpec):
        raise ValueError(f"Train elements must be images; got {spec}.")
    if spec.dtype != tf.uint8:
        raise ValueError(
            f"Train images must be raw uint8 pixels; got dtype {spec.dtype.name}. "
            "Pass the undecoded-range images (e.g. tf.cast(x, tf.uint8)); the "
            "distiller renders float views itself.")
    if spec.shape.rank == 4:
        images = images.unbatch()
    elif spec.shape.rank != 3:
        raise ValueError(
            f"Train images must have rank 3 [H, W, C] (or rank 4 when batched); got "
            f"shape {spec.shape}. Grayscale images need a channel axis: x[..., None].")
    have = images.element_spec.shape[-1]
    if channels is not None and have is not None and have != channels:
        raise ValueError(f"Train images have {have} channels; the models take {channels}.")
    height, width = images.element_spec.shape[:2]
    if (min_side is not None and height is not None and width is not None
            and min(height, width) < min_side):
        raise ValueError(
            f"Train images are {height}x{width}, smaller than the crop size "
            f"image_size={min_side}. Use larger images or a smaller image_size.")
    return images


def count(dataset):
    """Number of elements; a dataset of unknown cardinality is read through once."""
    n = int(dataset.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        return None
    if n == tf.data.UNKNOWN_CARDINALITY:
        n = int(dataset.reduce(np.int64(0), lambda c, _: c + 1))
    return n


StreamInfo = collections.namedtuple(
    "StreamInfo", "initial_step batch_size num_images shuffle_buffer shuffle")
StreamInfo.__doc__ = """What a FunMatch stream was built with (a teacher cache checks it)."""


def funmatch_stream(distiller, images, batch_size, initial_epoch=0, shuffle=True,
                    num_images=None, initial_step=None, steps_per_epoch=None,
                    fixed_targets=None):
    """The view stream of :meth:`FunMatchDistiller.make_train_dataset` (see there).

    Where ``distiller.views.can_render_batched`` (bilinear views of images of
    one static size, ``batched_render`` on), the boxes and flips are still drawn
    per image with the same keys, but rendered after ``batch``
    (:meth:`~kdzoo.distill.funmatch.views.ViewMaker.render_batch`); the batches
    equal the per-image path's up to float rounding.

    ``fixed_targets``: for ``fix/*``, ``fn(N) -> array [N, ...]`` of per-image
    targets (:meth:`kdzoo.distill.funmatch.targets.TargetSource.fixed_for`), zipped with image
    ``i`` before shuffling. Returns ``(batches, StreamInfo)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    dataset = image_dataset(images, distiller.channels, distiller.image_size)
    views = distiller.views
    if num_images is not None:
        n = int(num_images)
    else:
        n = int(dataset.cardinality())
        if n == tf.data.UNKNOWN_CARDINALITY and views.fixed:
            n = count(dataset)
        elif n < 0:
            n = None
    if n is not None and n < batch_size:
        raise ValueError(f"The train dataset has {n} images, fewer than one batch "
                         f"of {batch_size}; use batch_size <= {n} or more images.")
    per_epoch = steps_per_epoch or (None if n is None else n // batch_size)
    if initial_step is None:
        if initial_epoch and per_epoch is None:
            raise ValueError("The number of train images is unknown, so initial_epoch "
                             "cannot be turned into a step; pass num_images= or "
                             "steps_per_epoch=.")
        initial_step = int(initial_epoch) * (per_epoch or 0)
    if views.fixed:
        if n is None:
            raise ValueError(f"{distiller.variant} needs a finite train dataset: its "
                             "targets are computed once per image.")
        targets = tf.data.Dataset.from_tensor_slices(fixed_targets(n))
        base = tf.data.Dataset.zip((dataset.enumerate(), targets)).map(
            lambda ii, t: (ii[0], ii[1], t))
    else:
        base = dataset.enumerate().map(lambda i, img: (i, img, tf.zeros([0])))
    buffer = min(distiller.shuffle_buffer, n) if n is not None else distiller.shuffle_buffer
    shuffle = bool(shuffle) and buffer > 1
    fixed = views.fixed
    batched = views.can_render_batched(dataset.element_spec.shape)
    image_views = views.train_boxes_and_image if batched else views.train_views

    def per_image(epoch, index, image, target):
        out = image_views(image, index, epoch)
        if fixed:
            out.pop("index")
            out["targets"] = target
        return out

    def per_batch(step, batch):
        if batched:
            batch = views.render_batch(batch)
        return views.batch_views(batch, 0, step)

    out = train_stream(base, batch_size=batch_size, seed=views.seed, per_image=per_image,
                       num_examples=n, initial_step=initial_step, per_batch=per_batch,
                       shuffle_buffer=buffer if shuffle else 0)
    return out, StreamInfo(initial_step, batch_size, n, buffer, shuffle)


def restored_epoch(callbacks):
    """The epoch a ``keras.callbacks.BackupAndRestore`` among ``callbacks`` will resume at.

    Keras restores it inside ``fit`` (``on_train_begin``), after the train stream
    is built; reading the backup's metadata here lets the stream start where the
    restored run does instead of at epoch 0's images. 0 when nothing is backed up.
    """
    import json
    import os

    import keras

    epoch = 0
    for cb in callbacks or ():
        if not isinstance(cb, keras.callbacks.BackupAndRestore):
            continue
        path = getattr(cb, "_training_metadata_path", None) or os.path.join(
            cb.backup_dir, "training_metadata.json")
        if not os.path.exists(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                epoch = max(epoch, int(json.load(f)["epoch"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"BackupAndRestore metadata {path} is unreadable ({e}); delete "
                             f"{cb.backup_dir} to start afresh.") from e
    return epoch


def labeled_stream(examples, *, num_classes, image_size, batch_size, seed, initial_step=0,
                   crop="random", flip=True, mixup_alpha=None, shuffle_buffer=10_000,
                   num_examples=None, inception_area_range=augment.INCEPTION_AREA_RANGE,
                   pad_fill=0, autoaugment=None, cutout=None, batched_render=False):
    """(image, label) examples -> endless batched (views, labels) on :func:`train_stream`.

    The supervised runs' stream (labels, mixup fine-tune, self distillation),
    keyed like FunMatch's. ``crop``: ``"pad"`` (pad by 1/8 of the size, random
    crop: the CIFAR recipe), ``"random"`` (the paper's mild random crop),
    ``"inception"`` (of ``inception_area_range`` of the area) or ``None``
    (resize the whole image); ``pad_fill`` is the pad's grey. Then the flip, then
    (the self-distillation authors' CIFAR pipeline) ``autoaugment``, a policy of
    :mod:`kdzoo.data.autoaugment` (``"cifar10"``), and ``cutout``, the side of one
    zeroed square. With ``mixup_alpha``
    the labels become mixed one-hot vectors (the paper's "fine-tune with mixup"
    baseline), one ratio per step keyed by ``(seed, step)``.

    ``batched_render``: where exact (images of one static size, no
    ``autoaugment`` / ``cutout``, which act on each rendered view), boxes and
    flips are drawn per image with the same keys but rendered per batch
    (:func:`kdzoo.data.batched_crops.render_boxes`; equal up to float rounding;
    2-3x less stream CPU for antialiased label streams, docs/speed.md).
    False (the default): per image, bit-identical to earlier kdzoo.
    """
    from kdzoo.data import autoaugment as aa
    from kdzoo.data import batched_crops
    crops = ("pad", "random", "inception", None)
    if crop not in crops:
        raise ValueError(f"crop must be one of {crops}, got {crop!r}.")
    _positive_int(batch_size, "batch_size")
    _positive_int(image_size, "image_size")
    if num_examples is None:
        num_examples = count(examples)

    batched = (bool(batched_render) and not autoaugment and not cutout
               and batched_crops.eligible(examples.element_spec[0].shape))

    def per_image(epoch, index, image, label):
        key = augment.make_key(seed, epoch, index)
        if crop == "pad":
            pad = max(1, image_size // 8)
            image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]],
                           constant_values=tf.cast(pad_fill, image.dtype))
            box = augment.random_crop_box(image, key, fraction=image_size / (image_size + 2 * pad))
        elif crop == "random":
            box = augment.random_crop_box(image, key)
        elif crop == "inception":
            box = augment.inception_crop_box(image, key, area_range=inception_area_range)
        else:
            box = augment.full_box(image)
        if batched:  # rendered in per_batch
            flip_key = augment.make_key(key, augment.STUDENT_FLIP)
            return ({"image": image, "box": box, "flip": augment.flip_decision(flip_key)
                     if flip else tf.constant(False)}, tf.cast(label, tf.int32))
        out = augment.crop_resize(image, box, image_size)
        if flip:
            out = augment.random_flip(out, augment.make_key(key, augment.STUDENT_FLIP))
        if autoaugment:
            out = aa.autoaugment(tf.round(out), key, autoaugment)
        if cutout:
            out = aa.cutout(out, key, int(cutout))
        return out, tf.cast(label, tf.int32)

    def render(batch):
        images, labels = batch
        return batched_crops.render_boxes(images["image"], images["box"], image_size,
                                          images["flip"], antialias=True), labels

    def mix(step, batch):
        images, labels = batch
        if not mixup_alpha:
            return images, labels
        onehot = tf.one_hot(labels, num_classes)
        (images, onehot), _ = augment.mixup(
            (images, onehot), augment.make_key(seed, augment.MIXUP, step), mixup_alpha)
        return images, onehot

    per_batch = mix if mixup_alpha else None
    if batched:
        per_batch = lambda step, batch: mix(step, render(batch))  # noqa: E731
    base = examples.enumerate().map(lambda i, ex: (i, ex[0], ex[1]))
    return train_stream(base, batch_size=batch_size, seed=seed, per_image=per_image,
                        num_examples=num_examples, initial_step=initial_step,
                        per_batch=per_batch, shuffle_buffer=shuffle_buffer)
