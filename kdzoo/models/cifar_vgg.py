"""CIFAR VGG-19 with batch norm.

kuangliu/pytorch-cifar ``models/vgg.py`` (cfg "VGG19"): sixteen 3x3 convs
(with bias) each followed by BN + ReLU, five 2x2 max-pools (32 -> 1 px), then a
single Dense layer on the 512 features. Sections (``stage1..stage4``) end
after the 2nd, 3rd, 4th and 5th pool: 128@8x8, 256@4x4, 512@2x2, 512@1x1.
``reference_params``: trainable parameters of the 100-class model.
"""

import keras

from kdzoo.models.cifar_resnet import BN_EPSILON, BN_MOMENTUM, preprocess
from kdzoo.models.common import classifier_top, image_input, stage_marker
from kdzoo.zoo.registry import register

VGG19_CFG = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512),
             (512, 512, 512, 512))


def cifar_vgg(cfg=VGG19_CFG, num_classes=100, include_top=True, input_shape=(32, 32, 3),
              pooling=None, width_divisor=1, name="cifar_vgg19_bn"):
    """VGG with BN; ``width_divisor`` > 1 gives narrow variants for tests."""
    inputs = image_input(input_shape)
    x = preprocess(inputs)
    for b, widths in enumerate(cfg, start=1):
        for i, width in enumerate(widths, start=1):
            x = keras.layers.Conv2D(width // width_divisor, 3, padding="same",
                                    kernel_initializer="he_normal",
                                    name=f"block{b}_conv{i}")(x)
            x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                                name=f"block{b}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"block{b}_relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        if b >= 2:
            x = stage_marker(x, b - 1)
    outputs = classifier_top(x, num_classes, include_top, pooling)
    return keras.Model(inputs, outputs, name=name)


@register(
    "cifar_vgg19_bn", input_size=32, num_classes=100, family="cifar_vgg",
    description="CIFAR VGG-19 with batch norm, single Dense classifier (4 sections)",
    reference_params=20_086_692,
    reference="kuangliu/pytorch-cifar models/vgg.py VGG('VGG19') "
              "(20,040,522 with 10 classes + the 100-class head)")
def cifar_vgg19_bn(num_classes=100, include_top=True, input_shape=(32, 32, 3), pooling=None,
                   **kwargs):
    """CIFAR VGG-19-BN (kuangliu/pytorch-cifar)."""
    return cifar_vgg(VGG19_CFG, num_classes=num_classes, include_top=include_top,
                     input_shape=input_shape, pooling=pooling, **kwargs)

