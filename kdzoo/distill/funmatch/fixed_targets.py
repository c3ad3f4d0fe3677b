"""``fix/*`` teachers: every image's fixed target, computed once, in bounded memory.

The paper's ``fix/ic_ens`` target is the teacher's tempered prediction
averaged over 1,000 inception crops of the image (Beyer et al. 2022, sec. 3).
Rendering all crops of an image at once would hold ``1000 x T x T x C``
floats per image (600 MB at 224 px) in every ``tf.data`` worker, so the
views are streamed instead: the pipeline yields one ``(image index, view)``
element per crop, batched by ``batch_size`` *views* (a batch may span two
images), the teacher runs on each batch and its probabilities are added
into the row of their image. At most ``batch_size`` views (plus one
prefetched batch) exist at a time, whatever ``ensemble_crops`` is, and every
teacher call but the last is a full batch. ``fix/rs`` and ``fix/cc`` are the
one-view case.

Ensembles keep one target per teacher (``[N, M, K]``) so that the loss can
sum the per-teacher KLs (:func:`kdzoo.distill.losses.distill_per_example`).
"""

import numpy as np
import tensorflow as tf

_AUTOTUNE = tf.data.AUTOTUNE


def target_view_dataset(views, dataset, batch_size):
    """Batches ``(indices [b], views [b, T, T, C])`` of every fixed teacher view, in order."""
    crops = views.target_crops
    indexed = dataset.enumerate()
    if crops == 1:
        flat = indexed.map(lambda i, img: (i, views.target_view(img, i)),
                           num_parallel_calls=_AUTOTUNE, deterministic=True)
    else:
        # One element per (image, crop); the image tensor is shared, not copied.
        flat = indexed.flat_map(
            lambda i, img: tf.data.Dataset.from_tensors((i, img)).repeat(crops).enumerate()
        ).map(lambda k, item: (item[0], views.target_view(item[1], item[0], k)),
              num_parallel_calls=_AUTOTUNE, deterministic=True)
    return flat.batch(int(batch_size)).prefetch(1)


def compute_fixed_targets(teacher_fn, views, dataset, num_images, batch_size):
    """The average over each image's fixed views of ``teacher_fn``'s probabilities.

    ``teacher_fn(views [b, T, T, C])`` returns tempered probabilities ``[b, K]``
    (one teacher) or ``[b, M, K]`` (an ensemble); the result is float32
    ``[N, K]`` or ``[N, M, K]``, row ``i`` for image ``i`` of ``dataset``.
    """
    crops = views.target_crops
    sums, counts = None, np.zeros([num_images], np.int64)
    for indices, batch in target_view_dataset(views, dataset, batch_size):
        probs = np.asarray(teacher_fn(batch), np.float64)
        idx = indices.numpy()
        if sums is None:
            sums = np.zeros((num_images,) + probs.shape[1:], np.float64)
        if idx.size and idx.max() >= num_images:
            raise RuntimeError(f"The train dataset yielded more than the {num_images} "
                               "images it was counted to have.")
        np.add.at(sums, idx, probs)
        np.add.at(counts, idx, 1)
    if sums is None or not np.all(counts == crops):
        got = 0 if sums is None else int(np.count_nonzero(counts))
        raise RuntimeError(f"Prepared fixed targets for {got} of {num_images} images "
                           f"({crops} teacher views each): the train dataset changed size "
                           "while it was read.")
    return (sums / crops).astype(np.float32)
