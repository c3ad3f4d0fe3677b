"""BiT ResNet-v2 (Kolesnikov et al. 2020): GroupNorm + weight-standardised convs.

Exactly the layout the published checkpoints need (``kdzoo.zoo.convert.bit_npz``
maps their keys onto these layer names): a 7x7/2 stem conv with no norm, a
3x3/2 max-pool with one pixel of padding (zeros or -inf: see
:data:`STEM_POOL_PADDINGS`), pre-activation bottleneck units whose projection
takes the activated input, the stride on the 3x3 conv of a stage's first unit,
GroupNorm(32, eps 1e-5), then a final GroupNorm + ReLU + global average pool
and the ``head``. Inputs are raw pixels in [0, 255]; the ``preprocess`` layer
maps them to BiT's [-1, 1].
"""

import keras
import numpy as np
from keras import ops

from kdzoo.models.common import classifier_top, image_input, stage_marker
from kdzoo.zoo.registry import register

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
GN_GROUPS = 32
GN_EPSILON = 1e-5
WS_EPSILON = 1e-10
# How the stem's 3x3/2 max-pool pads its input, per the code that trained a checkpoint:
# "zeros": google-research/big_transfer (bit_jax/models.py, bit_tf2/models.py: zero
# padding, then a VALID pool), which trained the BiT-S/BiT-M checkpoints; timm does
# the same. "neg_inf": big_vision models/bit_paper.py (RootBlock, line 78 at
# 2f3f493: flax ``nn.max_pool(..., padding=[(1, 1), (1, 1)])``, whose padding is
# -inf), which trained the FunMatch ``distill/`` checkpoints. The two differ only
# where a border window's real values are all negative (the stem conv has no norm
# or ReLU, so this happens); docs/funmatch.md says how to choose.
STEM_POOL_PADDINGS = ("zeros", "neg_inf")


@keras.saving.register_keras_serializable(package="kdzoo")
class StandardizedConv2D(keras.layers.Conv2D):
    """Conv2D whose kernel is standardised over (H, W, in) before every use."""

    def __init__(self, *args, ws_epsilon=WS_EPSILON, **kwargs):
        super().__init__(*args, **kwargs)
        self.ws_epsilon = ws_epsilon

    def convolution_op(self, inputs, kernel):
        kernel = ops.cast(kernel, "float32")
        mean = ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        var = ops.var(kernel, axis=(0, 1, 2), keepdims=True)
        kernel = (kernel - mean) / ops.sqrt(var + self.ws_epsilon)
        return super().convolution_op(inputs, ops.cast(kernel, inputs.dtype))

    def get_config(self):
        return {**super().get_config(), "ws_epsilon": self.ws_epsilon}


def _gn_relu(x, name):
    x = keras.layers.GroupNormalization(GN_GROUPS, epsilon=GN_EPSILON, name=name + "_gn")(x)
    return keras.layers.ReLU(name=name + "_relu")(x)


def _conv(x, filters, kernel, stride, name):
    if kernel > 1:  # explicit symmetric padding as in the reference (k // 2 each side)
        x = keras.layers.ZeroPadding2D(kernel // 2, name=name + "_pad")(x)
    return StandardizedConv2D(filters, kernel, strides=stride, padding="valid",
                              use_bias=False, name=name + "_conv")(x)


def _stem_pool(x, padding):
    """The stem's 3x3/2 max-pool over a 1-pixel padded map.

    For ``"neg_inf"`` the map is padded by repeating its edge pixels (a width-1
    symmetric pad, a stock ``keras.ops`` call, so plain-Keras export and TFLite
    need nothing new): with a 3x3 window, stride 2 and 1 pixel of padding, every
    window that holds a padded pixel also holds the edge pixel it repeats, so the
    maximum is exactly the maximum over real pixels, i.e. what -inf padding gives,
    without an infinity in a bfloat16 graph.
    """
    if padding == "zeros":
        x = keras.layers.ZeroPadding2D(1, name="root_pool_pad")(x)
    else:
        x = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="symmetric")
    return keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="root_pool")(x)


def _unit(x, mid, stride, name):
    """Pre-activation bottleneck: GN-ReLU-conv1x1, GN-ReLU-conv3x3/s, GN-ReLU-conv1x1."""
    out = 4 * mid
    shortcut = x
    x = _gn_relu(x, name + "_a")
    if stride != 1 or x.shape[-1] != out:
        shortcut = _conv(x, out, 1, stride, name + "_a_proj")
    x = _conv(x, mid, 1, 1, name + "_a")
    x = _gn_relu(x, name + "_b")
    x = _conv(x, mid, 3, stride, name + "_b")
    x = _gn_relu(x, name + "_c")
    x = _conv(x, out, 1, 1, name + "_c")
    return keras.layers.Add(name=name + "_add")([x, shortcut])


def zero_init_head(model):
    """Set the ``head`` Dense layer's kernel and bias to zero; returns ``model``.

    big_vision ``models/bit_paper.py`` builds every BiT with
    ``head_zeroinit=True`` (``kernel_init=zeros``; flax's bias default is zeros
    too), so a student distilled from scratch starts from uniform predictions:
    the first steps train the head alone (the backbone's gradient through a
    zero head is zero) instead of fitting a random projection. A model without
    a ``head`` layer is refused.
    """
    try:
        head = model.get_layer("head")
    except ValueError as e:
        raise ValueError(f"Model {model.name!r} has no layer named 'head' to zero-initialise "
                         "(was it built with include_top=False?).") from e
    head.set_weights([np.zeros(w.shape, w.dtype) for w in head.get_weights()])
    return model


def build_bit(depth, width, num_classes=1000, include_top=True, input_shape=(224, 224, 3),
              pooling=None, name=None, units=None, head_zeroinit=False,
              stem_pool_padding="zeros"):
    """A BiT ResNet-v2 ``R{depth}x{width}``; see the module docstring.

    ``units`` (e.g. ``(1, 1, 1, 1)``) overrides the units per block for tiny test
    models; ``width`` may then be fractional as long as widths stay multiples of 32.
    ``head_zeroinit``: a zero head as big_vision's ``bit_paper`` (see
    :func:`zero_init_head`; for students trained from scratch). Off by default,
    so a randomly initialised zoo model (``kdzoo.load(..., weights=None)``)
    still has a Glorot head; checkpoints overwrite the head either way.
    ``stem_pool_padding``: ``"zeros"`` (big_transfer) or ``"neg_inf"`` (big_vision);
    see :data:`STEM_POOL_PADDINGS`. Zoo cards set it per checkpoint.
    """
    if stem_pool_padding not in STEM_POOL_PADDINGS:
        raise ValueError(f"stem_pool_padding must be one of {STEM_POOL_PADDINGS}, got "
                         f"{stem_pool_padding!r}.")
    if units is None and depth not in DEPTHS:
        raise ValueError(f"BiT depth must be one of {sorted(DEPTHS)}, got {depth}.")
    if int(64 * width) % GN_GROUPS:
        raise ValueError(f"64 * width must be a multiple of {GN_GROUPS} (GroupNorm groups).")
    inputs = image_input(input_shape)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    x = _conv(x, int(64 * width), 7, 2, "root")
    x = _stem_pool(x, stem_pool_padding)
    for b, count in enumerate(units or DEPTHS[depth], start=1):
        mid = int(64 * width) * 2 ** (b - 1)
        for u in range(1, count + 1):
            stride = 2 if (u == 1 and b > 1) else 1
            x = _unit(x, mid, stride, f"block{b}_unit{u:02d}")
        x = stage_marker(x, b)
    x = _gn_relu(x, "pre_head")
    outputs = classifier_top(x, num_classes, include_top, pooling)
    model = keras.Model(inputs, outputs, name=name or f"bit_r{depth}x{width}")
    if head_zeroinit and include_top:
        zero_init_head(model)
    return model


def tiny_bit(num_classes=10, input_shape=(32, 32, 3), head_zeroinit=False, name="tiny_bit",
             **kwargs):
    """A 1-unit-per-block, half-width BiT: the stand-in of recipes' ``--smoke`` runs.

    Not registered in the zoo (no paper, no weights); it has BiT's layer names
    and stages, so every code path of a BiT run is exercised in seconds. The tests
    build their tiny BiTs here too; ``kwargs`` (``include_top``, ``pooling``,
    ``stem_pool_padding``) go to :func:`build_bit`.
    """
    return build_bit(50, 0.5, num_classes=num_classes, input_shape=input_shape,
                     units=(1, 1, 1, 1), name=name, head_zeroinit=head_zeroinit, **kwargs)


def _register(depth, width):
    def builder(num_classes=1000, include_top=True, input_shape=(224, 224, 3), pooling=None,
                **kwargs):
        return build_bit(depth, width, num_classes, include_top, input_shape, pooling, **kwargs)

    register(
        f"bit_r{depth}x{width}", input_size=224, num_classes=1000, family="bit",
        description=f"BiT ResNet-v2 R{depth}x{width} (GroupNorm + weight standardisation)",
        reference="google-research/big_transfer; timm resnetv2_*_bit (1000-class head)",
    )(builder)


for _depth, _width in ((50, 1), (50, 3), (101, 1), (101, 3), (152, 2), (152, 4)):
    _register(_depth, _width)
