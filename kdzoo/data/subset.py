"""Class-balanced, seeded training subsets: the small-data regime of the FunMatch paper.

Why a subset of its own: the paper's point is made on small training sets
(flowers102: 1,020 images, 10 per class). To study that regime on a large
dataset, a run trains on ``per_class`` images of every class, drawn once by
``seed`` from the train split's order, so every method and every training seed
of a study sees the very same images.
"""

import numpy as np
import tensorflow as tf

__all__ = ["balanced_indices", "balanced_subset"]


def balanced_indices(labels, per_class, seed=0):
    """Sorted indices of ``per_class`` examples of each class in ``labels``, drawn by ``seed``.

    Raises ``ValueError`` when a class has fewer than ``per_class`` examples.
    """
    labels = np.asarray(labels).reshape(-1)
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) \
            or per_class < 1:
        raise ValueError(f"train_per_class must be a positive int, got {per_class!r}.")
    rng = np.random.default_rng(int(seed))
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise ValueError(f"train_per_class={per_class}, but class {int(cls)} has only "
                             f"{len(members)} training examples; lower train_per_class.")
        chosen.append(rng.choice(members, size=int(per_class), replace=False))
    return np.sort(np.concatenate(chosen))


def balanced_subset(examples, per_class, seed=0):
    """``(image, label)`` examples -> ``(subset dataset, its size)`` in the stored order.

    The labels are read once (one pass over the split, no images kept); the
    subset's images are cached in memory after its first pass.
    """
    batches = examples.map(lambda image, label: label).batch(65536)  # a few big reads
    labels = np.concatenate([np.asarray(b, np.int64).reshape(-1)
                             for b in batches.as_numpy_iterator()] or [np.zeros(0, np.int64)])
    indices = balanced_indices(labels, per_class, seed)
    keep = np.zeros(len(labels), bool)
    keep[indices] = True
    keep = tf.constant(keep)
    # Cached: the filter scans the whole split once, not once per data epoch (a
    # 1,000-image subset of 55,000 would otherwise read 55x its size every epoch).
    subset = examples.enumerate().filter(lambda i, example: keep[i]).map(
        lambda i, example: example).cache()
    subset = subset.apply(tf.data.experimental.assert_cardinality(len(indices)))
    return subset, len(indices)
