"""A run's own training images: NumPy arrays in place of a dataset's train split.

Why: some questions train on images that are no split of the task's dataset (the
FunMatch paper's section 3.8 distils on out-of-domain images; a pretraining run
relabels images the study holds out). A run's ``train_images`` is a callable that
returns them; it is recorded in the run's settings by name and arguments, like a
model builder, so it must give the same arrays every time it is called. Everything
downstream (crops, the train stream, the schedule) treats them as it treats a split.
"""

import numpy as np

__all__ = ["array_examples"]


def _fail(what, problem, fix):
    raise ValueError(f"{what}: {problem}; {fix}")


def array_examples(source, spec, at_least=None, what="train_images"):
    """``source()`` -> ``(tf.data.Dataset of (image uint8 [H, W, C], label int32), N)``.

    ``source`` returns ``images`` (uint8 ``[N, H, W, C]``, ``C == spec.channels``) or
    ``(images, labels)`` with int labels in ``[0, spec.num_classes)``; without labels
    every label is 0 (distillation never reads them). ``at_least``: the run's
    ``num_train_examples``, which the source must cover.
    """
    import tensorflow as tf
    out = source()
    images, labels = out if isinstance(out, tuple) else (out, None)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != spec.channels:
        _fail(what, f"got {images.dtype} images of shape {images.shape}",
              f"return uint8 images [N, H, W, {spec.channels}] (scaled to 0..255).")
    n = len(images)
    labels = np.zeros(n, np.int32) if labels is None else np.asarray(labels).astype(np.int32)
    if labels.shape != (n,) or (n and not 0 <= labels.min() <= labels.max() < spec.num_classes):
        _fail(what, f"{labels.shape} labels for {n} images, or labels outside "
              f"[0, {spec.num_classes})", "return one int label per image in that range.")
    if n == 0 or (at_least and n < at_least):
        _fail(what, f"{n} images, num_train_examples={at_least}",
              "return at least one image and at least num_train_examples of them.")
    return tf.data.Dataset.from_tensor_slices((images, labels)), n
