"""CIFAR PyramidNet-101 (alpha 240, bottleneck units).

Han et al. 2017, "Deep Pyramidal Residual Networks", in the PyTorch definition
of dyhan0920/PyramidNet-PyTorch (``PyramidNet.py``): a 3x3 conv stem (16) + BN;
three sections of n = (depth - 2) / 9 = 11 bottleneck units whose width grows
by alpha / (3n) per unit (``int(round(...))`` of the running float width);
units are BN-conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1(x4)-BN; the shortcut is the
identity (2x2 average-pooled where the unit has stride 2) zero-padded to the
new width; then BN-ReLU, global average pooling and one Dense layer.
Sections end in ``stage1..stage3``; ``stage3`` sits after the final BN-ReLU.
``reference_params``: trainable parameters of that definition with 100
classes. (The same arithmetic gives 26.8M for PyramidNet-200 alpha 240 and
27.3M for PyramidNet-164 alpha 270, where the paper's table lists 26.6M and
27.0M; the paper's counts run about 1% below its code's.)
"""

import keras
from keras import ops

from kdzoo.models.cifar_resnet import bn, conv, preprocess, relu
from kdzoo.models.common import classifier_top, image_input, stage_marker
from kdzoo.zoo.registry import register


@keras.saving.register_keras_serializable(package="kdzoo")
class ChannelZeroPad(keras.layers.Layer):
    """Append zero channels so the shortcut matches the residual branch's width."""

    def __init__(self, extra_channels, **kwargs):
        super().__init__(**kwargs)
        self.extra_channels = int(extra_channels)

    def call(self, x):
        if self.extra_channels == 0:
            return x
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra_channels]])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (input_shape[-1] + self.extra_channels,)

    def get_config(self):
        return {**super().get_config(), "extra_channels": self.extra_channels}


def unit_widths(depth, alpha, base_width=16):
    """``[(in_channels, planes, stride), ...]`` for every unit, as the reference computes them."""
    n = (depth - 2) // 9
    addrate = alpha / (3 * n * 1.0)
    input_dim, featuremap_dim = base_width, float(base_width)
    units = []
    for s in range(3):
        stride = 1 if s == 0 else 2
        featuremap_dim = featuremap_dim + addrate
        units.append((input_dim, int(round(featuremap_dim)), stride))
        for _ in range(1, n):
            temp = featuremap_dim + addrate
            units.append((int(round(featuremap_dim)) * 4, int(round(temp)), 1))
            featuremap_dim = temp
        input_dim = int(round(featuremap_dim)) * 4
    return units, n


def _unit(x, planes, stride, name):
    y = bn(x, f"{name}_bn1")
    y = conv(y, planes, 1, 1, name=f"{name}_conv1")
    y = relu(bn(y, f"{name}_bn2"), f"{name}_relu1")
    y = conv(y, planes, 3, stride, name=f"{name}_conv2")
    y = relu(bn(y, f"{name}_bn3"), f"{name}_relu2")
    y = conv(y, planes * 4, 1, 1, name=f"{name}_conv3")
    y = bn(y, f"{name}_bn4")
    shortcut = x
    if stride != 1:
        shortcut = keras.layers.AveragePooling2D(2, padding="same",
                                                 name=f"{name}_shortcut_pool")(shortcut)
    extra = planes * 4 - x.shape[-1]
    if extra:
        shortcut = ChannelZeroPad(extra, name=f"{name}_shortcut_pad")(shortcut)
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def cifar_pyramidnet(depth=101, alpha=240, num_classes=100, include_top=True,
                     input_shape=(32, 32, 3), pooling=None, base_width=16, name=None):
    if (depth - 2) % 9:
        raise ValueError(f"Bottleneck PyramidNet depth must be 9n+2, got {depth}.")
    units, n = unit_widths(depth, alpha, base_width)
    inputs = image_input(input_shape)
    x = preprocess(inputs)
    x = conv(x, base_width, 3, 1, name="stem_conv")
    x = bn(x, "stem_bn")
    for i, (_, planes, stride) in enumerate(units):
        s, b = divmod(i, n)
        x = _unit(x, planes, stride, name=f"block{s + 1}_{b + 1}")
        if b == n - 1:
            if s == 2:
                x = relu(bn(x, "final_bn"), "final_relu")
            x = stage_marker(x, s + 1)
    outputs = classifier_top(x, num_classes, include_top, pooling)
    return keras.Model(inputs, outputs, name=name or f"cifar_pyramidnet{depth}_{alpha}")


@register(
    "cifar_pyramidnet101_240", input_size=32, num_classes=100,
    family="cifar_pyramidnet",
    description="CIFAR PyramidNet-101, alpha 240, bottleneck units (3 sections)",
    reference_params=13_688_174,
    reference="Han et al. 2017; dyhan0920/PyramidNet-PyTorch PyramidNet.py "
              "PyramidNet('cifar100', 101, 240, 100, bottleneck=True)")
def cifar_pyramidnet101_240(num_classes=100, include_top=True, input_shape=(32, 32, 3),
                            pooling=None, **kwargs):
    """PyramidNet-101, alpha 240, bottleneck units (11 per section)."""
    return cifar_pyramidnet(101, 240, num_classes=num_classes, include_top=include_top,
                            input_shape=input_shape, pooling=pooling,
                            name="cifar_pyramidnet101_240", **kwargs)

