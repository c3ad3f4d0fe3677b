"""AutoAugment's CIFAR-10 policy and Cutout, as the self-distillation authors train with them.

The official BYOT code (ArchipLab-LinfengZhang/pytorch-self-distillation-final,
``train.py`` lines 34-38) trains CIFAR-100 with ``RandomCrop(32, padding=4,
fill=128)``, ``RandomHorizontalFlip()``, ``CIFAR10Policy()``, ``ToTensor()``,
``Cutout(n_holes=1, length=16)``. Its ``autoaugment`` file is the widely copied
PIL implementation: 25 sub-policies of two operations, one drawn uniformly per
image, each operation applied with its probability; shear, translate, colour,
contrast, sharpness and brightness take a random sign, rotation does not (it
always turns counter-clockwise); the fill colour is grey 128. Cutout (DeVries &
Taylor 2017) zeroes one square of side 16 centred on a uniform pixel, clipped
at the borders, after ``ToTensor`` and before normalisation: black.

Here every operation is a TensorFlow op on a ``[H, W, C]`` image of integral
values in [0, 255] (as PIL's uint8), seeded by a stateless key, so it runs
inside ``tf.data.Dataset.map`` and is reproducible after a resume. Each op
follows PIL's arithmetic (``ImageOps`` look-up tables, ``ImageEnhance`` blends
truncated to uint8, the ITU-R 601 grey of ``convert("L")``, the 3x3
``SMOOTH`` kernel, pixel-centre coordinates); ``tests/data/test_autoaugment.py``
compares each with PIL itself. One difference: PIL shears with bicubic
resampling, TensorFlow's projective transform offers bilinear at most, so the
two shears are bilinear (within about one grey level of PIL's on average; up
to tens of levels on the sheared-in border, where bicubic reaches the fill).
"""

import functools
import math

import numpy as np
import tensorflow as tf

from kdzoo.data.augment import make_key

AUTOAUGMENT = 8  # salts of the per-image key (kdzoo.data.augment uses 1-7)
CUTOUT = 9
FILL = 128.0

OPS = ("shearX", "shearY", "translateX", "translateY", "rotate", "color", "posterize",
       "solarize", "contrast", "sharpness", "brightness", "autocontrast", "equalize",
       "invert")
SIGNED = ("shearX", "shearY", "translateX", "translateY", "color", "contrast", "sharpness",
          "brightness")

# The magnitude of each op at levels 0-9 (the authors' ``SubPolicy`` ranges).
MAGNITUDES = {
    "shearX": np.linspace(0, 0.3, 10), "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10), "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10), "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0), "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10), "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10), "autocontrast": np.zeros(10),
    "equalize": np.zeros(10), "invert": np.zeros(10)}

# (p1, op1, level1, p2, op2, level2): the 25 sub-policies of ``CIFAR10Policy``, in order.
CIFAR10_POLICY = (
    (0.1, "invert", 7, 0.2, "contrast", 6), (0.7, "rotate", 2, 0.3, "translateX", 9),
    (0.8, "sharpness", 1, 0.9, "sharpness", 3), (0.5, "shearY", 8, 0.7, "translateY", 9),
    (0.5, "autocontrast", 8, 0.9, "equalize", 2), (0.2, "shearY", 7, 0.3, "posterize", 7),
    (0.4, "color", 3, 0.6, "brightness", 7), (0.3, "sharpness", 9, 0.7, "brightness", 9),
    (0.6, "equalize", 5, 0.5, "equalize", 1), (0.6, "contrast", 7, 0.6, "sharpness", 5),
    (0.7, "color", 7, 0.5, "translateX", 8), (0.3, "equalize", 7, 0.4, "autocontrast", 8),
    (0.4, "translateY", 3, 0.2, "sharpness", 6), (0.9, "brightness", 6, 0.2, "color", 8),
    (0.5, "solarize", 2, 0.0, "invert", 3), (0.2, "equalize", 0, 0.6, "autocontrast", 0),
    (0.2, "equalize", 8, 0.6, "equalize", 4), (0.9, "color", 9, 0.6, "equalize", 6),
    (0.8, "autocontrast", 4, 0.2, "solarize", 8), (0.1, "brightness", 3, 0.7, "color", 0),
    (0.4, "solarize", 5, 0.9, "autocontrast", 3), (0.9, "translateY", 9, 0.7, "translateY", 9),
    (0.9, "autocontrast", 2, 0.8, "solarize", 3), (0.8, "equalize", 8, 0.1, "invert", 3),
    (0.7, "translateY", 9, 0.9, "autocontrast", 1))
POLICIES = {"cifar10": CIFAR10_POLICY}


# -- PIL's operations (image: float32 [H, W, C], integral values in [0, 255]) -----------
def _u8(x):
    """PIL's uint8 store of a float result: truncated, clipped."""
    return tf.clip_by_value(tf.floor(x), 0.0, 255.0)


def _grey(image):
    """``convert("L")``: (R*19595 + G*38470 + B*7471 + 2**15) >> 16, as one channel."""
    if image.shape[-1] == 1:
        return image
    weights = tf.constant([19595.0, 38470.0, 7471.0])
    return tf.floor((tf.reduce_sum(image * weights, -1, keepdims=True) + 32768.0) / 65536.0)


def _blend(degenerate, image, factor):
    """``Image.blend(degenerate, image, factor)`` (``ImageEnhance``), truncated to uint8."""
    return _u8(degenerate + factor * (image - degenerate))


def _affine(image, matrix, nearest):
    """PIL ``transform(AFFINE, matrix)`` (output (x, y) -> input, pixel centres at +0.5)."""
    a, b, c, d, e, f = matrix
    # PIL maps pixel centres, a*(x+.5) + b*(y+.5) + c, and resamples at that minus 0.5.
    to_index = [a, b, c + 0.5 * (a + b - 1.0), d, e, f + 0.5 * (d + e - 1.0), 0.0, 0.0]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=tf.cast(tf.stack(to_index)[None], tf.float32),
        output_shape=tf.shape(image)[:2], fill_value=FILL,
        interpolation="NEAREST" if nearest else "BILINEAR", fill_mode="CONSTANT")[0]
    return out if nearest else tf.round(out)


def _rotate(image, degrees):
    """``rotate(degrees)`` (counter-clockwise about the centre, nearest) filled with grey."""
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    t = -degrees * math.pi / 180.0
    a, b, d, e = tf.cos(t), tf.sin(t), -tf.sin(t), tf.cos(t)
    cx, cy = w / 2.0, h / 2.0
    c = a * -cx + b * -cy + cx
    f = d * -cx + e * -cy + cy
    return _affine(image, (a, b, c, d, e, f), nearest=True)


def _smooth(image):
    """``filter(ImageFilter.SMOOTH)``: 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13, edges kept."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    planes = tf.transpose(image, [2, 0, 1])[..., None]  # [C, H, W, 1]: one kernel for all
    inner = tf.nn.conv2d(planes, kernel[:, :, None, None], 1, "VALID")
    inner = tf.transpose(tf.clip_by_value(tf.floor(inner + 0.5), 0.0, 255.0)[..., 0], [1, 2, 0])
    padded = tf.pad(inner, [[1, 1], [1, 1], [0, 0]])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    border = tf.pad(tf.zeros([h - 2, w - 2, 1]), [[1, 1], [1, 1], [0, 0]], constant_values=1.0)
    return border * image + (1.0 - border) * padded


def _per_channel_lut(image, make_lut):
    """``Image.point`` with ``make_lut(histograms [C, 256]) -> luts [C, 256]``, per channel."""
    pixels = tf.cast(image, tf.int32)
    channels = tf.shape(image)[-1]
    flat = tf.reshape(pixels + 256 * tf.range(channels), [-1])  # channel c's bins at 256c
    hist = tf.reshape(tf.math.bincount(flat, minlength=256 * channels,
                                       maxlength=256 * channels), [channels, 256])
    luts = tf.reshape(make_lut(tf.cast(hist, tf.int64)), [-1])
    return tf.cast(tf.gather(luts, pixels + 256 * tf.range(channels)), tf.float32)


def _bounds(hist):
    """Lowest and highest present value of each histogram ``[C, 256]``, as ``[C, 1]``."""
    ramp = tf.range(256, dtype=tf.int64)
    present = hist > 0
    lo = tf.reduce_min(tf.where(present, ramp, 256), axis=-1, keepdims=True)
    hi = tf.reduce_max(tf.where(present, ramp, -1), axis=-1, keepdims=True)
    return lo, hi


def _autocontrast_lut(hist):
    lo, hi = _bounds(hist)
    ramp = tf.range(256, dtype=tf.float64)
    scale = 255.0 / tf.cast(tf.maximum(hi - lo, 1), tf.float64)
    stretched = tf.clip_by_value(tf.floor(ramp * scale - tf.cast(lo, tf.float64) * scale),
                                 0.0, 255.0)
    return tf.cast(tf.where(hi > lo, stretched, ramp), tf.int32)


def _equalize_lut(hist):
    _, hi = _bounds(hist)
    last = tf.gather(hist, hi, batch_dims=1)  # the count of the highest present value
    step = (tf.reduce_sum(hist, -1, keepdims=True) - last) // 255
    before = tf.cumsum(hist, axis=-1, exclusive=True)
    safe = tf.maximum(step, 1)
    lut = tf.minimum((safe // 2 + before) // safe, 255)  # Image.point clips at 255
    return tf.cast(tf.where(step > 0, lut, tf.range(256, dtype=tf.int64)), tf.int32)


# The ops branch on Python values only (tf.cond / tf.switch_case for tensors): autograph
# has nothing to convert, and converting 25 sub-policies costs seconds per trace.
_graph_as_written = tf.autograph.experimental.do_not_convert


@_graph_as_written
def apply_op(name, image, magnitude, sign=1.0):
    """One AutoAugment operation with its magnitude (and sign, for the signed ones)."""
    m = magnitude * sign if name in SIGNED else magnitude
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    if name == "shearX":
        return _affine(image, (1.0, m, 0.0, 0.0, 1.0, 0.0), nearest=False)
    if name == "shearY":
        return _affine(image, (1.0, 0.0, 0.0, m, 1.0, 0.0), nearest=False)
    if name == "translateX":
        return _affine(image, (1.0, 0.0, m * w, 0.0, 1.0, 0.0), nearest=True)
    if name == "translateY":
        return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, m * h), nearest=True)
    if name == "rotate":
        return _rotate(image, m)
    if name == "color":
        return _blend(tf.broadcast_to(_grey(image), tf.shape(image)), image, 1.0 + m)
    if name == "contrast":
        mean = tf.floor(tf.reduce_mean(_grey(image)) + 0.5)
        return _blend(tf.fill(tf.shape(image), mean), image, 1.0 + m)
    if name == "sharpness":
        return _blend(_smooth(image), image, 1.0 + m)
    if name == "brightness":
        return _blend(tf.zeros_like(image), image, 1.0 + m)
    if name == "posterize":
        shift = tf.cast(8 - m, tf.int32)
        return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(
            tf.cast(image, tf.int32), shift), shift), tf.float32)
    if name == "solarize":
        return tf.where(image < m, image, 255.0 - image)
    if name == "autocontrast":
        return _per_channel_lut(image, _autocontrast_lut)
    if name == "equalize":
        return _per_channel_lut(image, _equalize_lut)
    if name == "invert":
        return 255.0 - image
    raise ValueError(f"Unknown AutoAugment op {name!r}; choose from {', '.join(OPS)}.")


def choose_sub_policy(key, count):
    """``(index in [0, count), draws [4])``: which sub-policy, and its apply / sign draws."""
    draws = tf.random.stateless_uniform([5], make_key(key, AUTOAUGMENT))
    return tf.minimum(tf.cast(draws[0] * count, tf.int32), count - 1), draws[1:]


@_graph_as_written
def autoaugment(image, key, policy="cifar10"):
    """One sub-policy of ``policy``, drawn by ``key``, applied to ``image`` (float32 [0, 255]).

    ``image`` must hold integral values (a pad crop and flip keep them integral),
    as PIL's uint8; the result does too.
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown AutoAugment policy {policy!r}; choose from "
                         f"{', '.join(sorted(POLICIES))}.")
    rows = POLICIES[policy]
    op_ids = tf.constant([[OPS.index(r[1]), OPS.index(r[4])] for r in rows], tf.int32)
    probs = tf.constant([[r[0], r[3]] for r in rows], tf.float32)
    levels = [[MAGNITUDES[r[1]][r[2]], MAGNITUDES[r[4]][r[5]]] for r in rows]
    magnitudes = tf.constant(levels, tf.float32)
    which, draws = choose_sub_policy(key, len(rows))
    out = image
    for stage in range(2):  # op 14 (past the table) leaves the image as it is
        op = tf.where(draws[2 * stage] < probs[which, stage], op_ids[which, stage], len(OPS))
        sign = tf.where(draws[2 * stage + 1] < 0.5, -1.0, 1.0)
        m = magnitudes[which, stage]
        branches = [functools.partial(apply_op, name, out, m, sign) for name in OPS]
        out = tf.switch_case(op, branches + [lambda o=out: o])
    return tf.ensure_shape(out, image.shape)


@_graph_as_written
def cutout(image, key, length=16):
    """Zero one ``length`` square centred on a uniform pixel, clipped at the borders."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    centre = tf.random.stateless_uniform([2], make_key(key, CUTOUT), maxval=2**30,
                                         dtype=tf.int32)
    y, x = centre[0] % h, centre[1] % w
    rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
    half = length // 2
    inside = ((rows >= tf.maximum(y - half, 0)) & (rows < tf.minimum(y + half, h))
              & (cols >= tf.maximum(x - half, 0)) & (cols < tf.minimum(x + half, w)))
    return image * tf.cast(~inside, image.dtype)[:, :, None]
