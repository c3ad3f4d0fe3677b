"""AutoAugment's CIFAR-10 policy and Cutout against PIL, the library the authors' code runs.

The oracle is PIL itself, called exactly as the authors' ``autoaugment`` file calls it
(``ImageOps``, ``ImageEnhance``, ``Image.transform`` with grey fill), on random and smooth
images; the TensorFlow ops must give the same uint8 pixels (the shears within a grey level on
average: PIL resamples them bicubically, TensorFlow bilinearly).
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from kdzoo.data import autoaugment as aa

FILL = (128, 128, 128)


def _images():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 32), np.linspace(0, 1, 32)), -1)
    smooth = np.concatenate([grid, grid[..., :1] * grid[..., 1:]], -1) * 200 + 20
    smooth = (smooth + 20 * np.sin(np.arange(32) / 3)[:, None, None]).clip(0, 255)
    return {"smooth": smooth.astype(np.uint8),
            "noise": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
            "low_contrast": rng.integers(60, 120, (32, 32, 3), dtype=np.uint8)}


def _pil(name, array, m, sign):
    """The authors' ``SubPolicy`` lambdas, with ``random.choice([-1, 1])`` fixed to ``sign``."""
    img = Image.fromarray(array)
    if name == "rotate":
        rot = img.convert("RGBA").rotate(m)
        return Image.composite(rot, Image.new("RGBA", rot.size, (128,) * 4), rot).convert("RGB")
    calls = {
        "shearX": lambda: img.transform(img.size, Image.AFFINE, (1, m * sign, 0, 0, 1, 0),
                                        Image.BICUBIC, fillcolor=FILL),
        "shearY": lambda: img.transform(img.size, Image.AFFINE, (1, 0, 0, m * sign, 1, 0),
                                        Image.BICUBIC, fillcolor=FILL),
        "translateX": lambda: img.transform(
            img.size, Image.AFFINE, (1, 0, m * img.size[0] * sign, 0, 1, 0), fillcolor=FILL),
        "translateY": lambda: img.transform(
            img.size, Image.AFFINE, (1, 0, 0, 0, 1, m * img.size[1] * sign), fillcolor=FILL),
        "color": lambda: ImageEnhance.Color(img).enhance(1 + m * sign),
        "posterize": lambda: ImageOps.posterize(img, int(m)),
        "solarize": lambda: ImageOps.solarize(img, m),
        "contrast": lambda: ImageEnhance.Contrast(img).enhance(1 + m * sign),
        "sharpness": lambda: ImageEnhance.Sharpness(img).enhance(1 + m * sign),
        "brightness": lambda: ImageEnhance.Brightness(img).enhance(1 + m * sign),
        "autocontrast": lambda: ImageOps.autocontrast(img),
        "equalize": lambda: ImageOps.equalize(img),
        "invert": lambda: ImageOps.invert(img)}
    return calls[name]()


def _compare(name):
    for image_name, array in _images().items():
        for level in (1, 5, 9):
            for sign in (-1.0, 1.0):
                m = float(aa.MAGNITUDES[name][level])
                want = np.asarray(_pil(name, array, m, sign), np.float32)
                got = aa.apply_op(name, tf.constant(array, tf.float32), m, sign).numpy()
                yield image_name, level, sign, np.abs(want - got)


@pytest.mark.parametrize("name", [n for n in aa.OPS if not n.startswith("shear")])
def test_each_op_gives_pils_pixels(name):
    for image_name, level, sign, diff in _compare(name):
        assert diff.max() == 0, (name, image_name, level, sign, diff.max(), (diff > 0).mean())


@pytest.mark.parametrize("name", ["shearX", "shearY"])
def test_shears_are_within_a_grey_level_of_pils_bicubic_shears(name):
    for image_name, level, sign, diff in _compare(name):
        if image_name == "smooth":
            assert diff.mean() < 1.5, (image_name, level, sign, diff.mean())


def test_the_policy_is_the_authors_cifar10_table():
    rows = aa.CIFAR10_POLICY
    assert len(rows) == 25
    assert rows[0] == (0.1, "invert", 7, 0.2, "contrast", 6)
    assert rows[-1] == (0.7, "translateY", 9, 0.9, "autocontrast", 1)
    for p1, op1, l1, p2, op2, l2 in rows:
        assert op1 in aa.OPS and op2 in aa.OPS and 0 <= l1 <= 9 and 0 <= l2 <= 9
        assert 0.0 <= p1 <= 1.0 and 0.0 <= p2 <= 1.0
    # magnitudes at level 9 (the authors' ranges): 0.3 shear, 150/331 translate, 30 degrees
    assert aa.MAGNITUDES["translateX"][9] == pytest.approx(150 / 331)
    assert list(aa.MAGNITUDES["posterize"]) == [8, 8, 7, 7, 6, 6, 5, 5, 4, 4]


def test_policy_draws_each_sub_policy_uniformly_and_reproducibly():
    """One sub-policy per image, uniform over 25; the same key gives the same image."""
    image = tf.constant(_images()["noise"], tf.float32)
    fn = tf.function(lambda k: aa.autoaugment(image, k))
    keys = [tf.constant([7, i], tf.int64) for i in range(3)]
    outs = [fn(k).numpy() for k in keys]
    assert np.array_equal(outs[0], fn(keys[0]).numpy())
    assert outs[0].shape == (32, 32, 3) and np.array_equal(outs[0], np.round(outs[0]))
    assert 0 <= outs[0].min() and outs[0].max() <= 255
    which = tf.function(lambda: tf.map_fn(
        lambda i: aa.choose_sub_policy(tf.stack([tf.constant(7, tf.int64), i]), 25)[0],
        tf.range(2500, dtype=tf.int64), fn_output_signature=tf.int32))()
    counts = np.bincount(which.numpy(), minlength=25)
    assert counts.min() > 60 and counts.max() < 140, counts  # expectation 100 each


def test_cutout_zeroes_one_clipped_16px_square_around_a_uniform_centre():
    ones = tf.ones([32, 32, 3])
    areas, centres = [], []
    many = tf.function(lambda: tf.map_fn(
        lambda i: aa.cutout(ones, tf.stack([tf.constant(3, tf.int64), i])),
        tf.range(400, dtype=tf.int64), fn_output_signature=tf.float32))().numpy()
    for out in many:
        assert np.array_equal(out[..., 0], out[..., 2])
        rows, cols = np.where(out[..., 0] == 0)
        assert set(np.unique(out)) <= {0.0, 1.0}
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert len(rows) == (y1 - y0) * (x1 - x0)  # one rectangle ...
        assert y1 - y0 <= 16 and x1 - x0 <= 16     # ... of side 16, clipped at borders
        if 0 < y0 and y1 < 32:
            assert y1 - y0 == 16
        areas.append(len(rows))
        centres.append((y0 + 8 if y0 > 0 else y1 - 8, x0 + 8 if x0 > 0 else x1 - 8))
    assert min(areas) < 256 == max(areas)  # clipped near borders, whole inside
    mean = np.mean(centres, axis=0)
    assert np.all(np.abs(mean - 15.5) < 2.0), mean  # centres uniform over [0, 32)


def _cifar_batch(**augmentation):
    from kdzoo.data.stream import labeled_stream
    images = np.full([16, 32, 32, 3], 200, np.uint8)
    examples = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 10))
    stream = labeled_stream(examples, num_classes=10, image_size=32, batch_size=16, seed=0,
                            crop="pad", shuffle_buffer=0, **augmentation)
    return next(iter(stream))[0].numpy()


def test_the_authors_cifar_pipeline_pads_grey_and_cuts_out_one_hole():
    """RandomCrop(32, padding=4, fill=128), flip, Cutout(16): pixels are 200, 128 or 0."""
    views = _cifar_batch(pad_fill=128, flip=False, cutout=16)
    assert set(np.unique(views)) <= {0.0, 128.0, 200.0}
    zeros = (views[..., 0] == 0).sum(axis=(1, 2))
    assert zeros.min() > 0 and zeros.max() <= 256        # one hole per image, at most 16x16
    assert (views[..., 0] == 128).any(axis=(1, 2)).sum() >= 8  # most crops show the grey pad
    plain = _cifar_batch(flip=False)
    assert set(np.unique(plain)) <= {0.0, 200.0}          # the default pad is black, no hole


@pytest.mark.slow
def test_autoaugment_in_the_stream_is_keyed_and_changes_images():
    a = _cifar_batch(pad_fill=128, autoaugment="cifar10", cutout=16)
    assert np.array_equal(a, _cifar_batch(pad_fill=128, autoaugment="cifar10", cutout=16))
    plain = _cifar_batch(pad_fill=128, cutout=16)
    changed = [not np.array_equal(x, y) for x, y in zip(a, plain)]
    assert 2 <= sum(changed) < 16  # some sub-policies leave a flat image as it is
    with pytest.raises(ValueError, match="cifar10"):
        _cifar_batch(autoaugment="imagenet")
