"""The images of section 3.8 (distilling on data that is not the task's), as run sources.

Each function returns uint8 images ``[N, 28, 28, 1]`` in 0..255 (the Fashion-MNIST
format) and no labels: distillation reads only the teacher. A run names one as its
``train_images`` (``kdzoo.data.arrays``); its settings record the function and its
arguments, so each must give the same arrays every call (fixed seeds, fixed lists).

* ``digits``: the 1,797 8x8 digits scikit-learn ships (``sklearn.datasets.load_digits``,
  values 0..16, ink high as in MNIST), upsampled bilinearly to 28 px, scaled x 255/16.
* ``natural_crops``: random square crops of the natural photographs scikit-image ships
  (``skimage.data``), grey, side 28..112 px of the photograph, area-resized to 28 px,
  drawn once by ``seed``. The count is that of the 59,000-image in-domain arm, so the
  two differ in domain, not in number.
* ``outside_subset``: the 59,000 Fashion-MNIST training images that are not the study's
  1,000 (the runner's own draw, ``kdzoo.data.subset.balanced_indices`` over the
  ``train[:55000]`` labels), unlabelled.
"""

import numpy as np

# skimage.data's natural photographs (bundled, no download); not its synthetic, text,
# binary or microscopy images.
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "grass",
          "gravel", "brick", "clock", "hubble_deep_field")
CROP_SIDES = (28, 42, 56, 84, 112)


def _to_uint8(x, scale):
    return np.clip(np.round(np.asarray(x, np.float32) * scale), 0, 255).astype(np.uint8)


def digits():
    """scikit-learn's 1,797 digits at 28 px (``[1797, 28, 28, 1]`` uint8)."""
    import tensorflow as tf
    from sklearn.datasets import load_digits
    small = load_digits().images.astype(np.float32)[..., None]  # 0..16
    return _to_uint8(tf.image.resize(small, (28, 28), method="bilinear").numpy(), 255 / 16)


def _grey_photos():
    import skimage.data
    from skimage.color import rgb2gray
    out = []
    for name in PHOTOS:
        image = getattr(skimage.data, name)()
        out.append(_to_uint8(rgb2gray(image), 255) if image.ndim == 3 else image)
    return out


def natural_crops(count=59_000, seed=0):
    """``count`` random grey crops of :data:`PHOTOS` at 28 px, drawn by ``seed``."""
    import tensorflow as tf
    rng, photos = np.random.default_rng(seed), _grey_photos()
    which, sides = rng.integers(len(photos), size=count), rng.choice(CROP_SIDES, size=count)
    out = np.zeros((count, 28, 28, 1), np.uint8)
    for side in CROP_SIDES:
        at = np.flatnonzero(sides == side)
        crops = [_crop(photos[which[i]], side, rng) for i in at]
        if crops:
            out[at] = _to_uint8(tf.image.resize(np.stack(crops)[..., None].astype(np.float32),
                                                (28, 28), method="area").numpy(), 1)
    return out


def _crop(photo, side, rng):
    y = rng.integers(photo.shape[0] - side + 1)
    x = rng.integers(photo.shape[1] - side + 1)
    return photo[y:y + side, x:x + side]


def outside_subset(train_per_class=100, subset_seed=0):
    """The Fashion-MNIST training images outside the study's subset (60,000 - 1,000)."""
    return outside_subset_labelled(train_per_class, subset_seed)[0]


def outside_subset_labelled(train_per_class=100, subset_seed=0):
    """``(images, 10-class labels)`` of :func:`outside_subset` (section 3.5 relabels them)."""
    from kdzoo.data import fashion_mnist, get_spec, split_ranges
    from kdzoo.data.subset import balanced_indices
    images, labels = fashion_mnist.load("train")
    spec = get_spec("fashion_mnist")
    ((_, start, stop),) = split_ranges(spec.train_split, spec.base_split_sizes)
    chosen = start + balanced_indices(labels[start:stop], train_per_class, subset_seed)
    return np.delete(images, chosen, axis=0), np.delete(labels, chosen)
