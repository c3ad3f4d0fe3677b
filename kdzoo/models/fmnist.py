"""Small CNNs for the embedded Fashion-MNIST (28x28x1) demo and our own checkpoints.

``fmnist_cnn`` is a VGG-style net: three sections of two 3x3 conv-BN-ReLU
layers (the first conv of the net has stride 2, so section 1 runs at 14x14:
a 4x cheaper net for 2-core CPUs at little cost on 28x28 images), 2x2 max-pool
between sections, then the ``head``. Its width multiplier
gives the teacher (``fmnist_cnn_w32``: 32-64-128 channels, ~0.29M params) and
the student (``fmnist_cnn_w16``: 16-32-64, ~0.07M params). Sections end in
``stage1..stage3`` so self distillation attaches exits without configuration.
"""

import keras

from kdzoo.models.common import classifier_top, image_input, stage_marker
from kdzoo.zoo.registry import register


def build_fmnist_cnn(width=32, num_classes=10, include_top=True, input_shape=(28, 28, 1),
                     pooling=None, name=None):
    inputs = image_input(input_shape)
    x = keras.layers.Rescaling(1 / 255.0, name="preprocess")(inputs)
    for section in range(1, 4):
        filters = width * 2 ** (section - 1)
        if section > 1:
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{section}")(x)
        for i in (1, 2):
            prefix = f"s{section}_conv{i}"
            stride = 2 if (section, i) == (1, 1) else 1
            x = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                                    name=prefix)(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=prefix + "_bn")(x)
            x = keras.layers.ReLU(name=prefix + "_relu")(x)
        x = stage_marker(x, section)
    outputs = classifier_top(x, num_classes, include_top, pooling)
    return keras.Model(inputs, outputs, name=name or f"fmnist_cnn_w{width}")


def _register(width, role):
    def builder(num_classes=10, include_top=True, input_shape=(28, 28, 1), pooling=None,
                **kwargs):
        return build_fmnist_cnn(width, num_classes, include_top, input_shape, pooling, **kwargs)

    register(
        f"fmnist_cnn_w{width}", input_size=28, num_classes=10, family="fmnist",
        channels=1, description=f"Fashion-MNIST {role}: 3 sections x 2 conv-BN-ReLU, "
                                f"widths {width}-{2 * width}-{4 * width}",
    )(builder)


_register(32, "teacher")
_register(16, "student")
