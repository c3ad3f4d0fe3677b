"""CIFAR ResNet-18/50/101/152 (3x3 stride-1 stem, no max-pool, 32x32 inputs).

The definition of kuangliu/pytorch-cifar (``models/resnet.py``), which
luanyunteng/pytorch-be-your-own-teacher, a third-party reimplementation of the
self-distillation paper, also uses. (The authors' own code,
ArchipLab-LinfengZhang/pytorch-self-distillation-final, builds torchvision's ResNet
with a 3x3 stride-1 stem and never calls its max-pool: ``resnet.py`` lines 166-170,
293-298.) The network: a 3x3/1 conv stem with BN + ReLU, four sections of basic (18) or
bottleneck (50/101/152) units at 64/128/256/512 planes, strides 1/2/2/2,
global average pooling and one Dense layer. Convolutions have no bias; BN uses
PyTorch's epsilon (1e-5) and momentum (0.1, i.e. Keras' 0.9). Stride-2 3x3
convolutions pad one pixel on every side like PyTorch (not Keras' "same").

Sections end in identity layers ``stage1..stage4`` (see ``kdzoo.models.common``).
``reference_params`` counts trainable parameters (PyTorch's ``parameters()``;
BN moving statistics are not parameters) of the 100-class model.
"""

import keras

from kdzoo.models.common import classifier_top, image_input, stage_marker
from kdzoo.zoo.registry import register

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def preprocess(x):
    """Raw pixels in [0, 255] -> [-1, 1] (the layer every zoo model starts with)."""
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(x)


def conv(x, filters, kernel_size, strides=1, name=None, groups=1, use_bias=False):
    """A convolution padded like PyTorch's ``padding=kernel_size // 2``."""
    pad = kernel_size // 2
    if strides > 1 and pad:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                               groups=groups, use_bias=use_bias,
                               kernel_initializer="he_normal", name=name)(x)


def bn(x, name):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM,
                                           name=name)(x)


def relu(x, name):
    return keras.layers.ReLU(name=name)(x)


def _basic_unit(x, planes, stride, name):
    shortcut = x
    y = conv(x, planes, 3, stride, name=f"{name}_conv1")
    y = relu(bn(y, f"{name}_bn1"), f"{name}_relu1")
    y = conv(y, planes, 3, 1, name=f"{name}_conv2")
    y = bn(y, f"{name}_bn2")
    if stride != 1 or x.shape[-1] != planes:
        shortcut = conv(x, planes, 1, stride, name=f"{name}_proj")
        shortcut = bn(shortcut, f"{name}_proj_bn")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return relu(y, f"{name}_out")


def _bottleneck_unit(x, planes, stride, name, expansion=4):
    shortcut = x
    y = conv(x, planes, 1, 1, name=f"{name}_conv1")
    y = relu(bn(y, f"{name}_bn1"), f"{name}_relu1")
    y = conv(y, planes, 3, stride, name=f"{name}_conv2")
    y = relu(bn(y, f"{name}_bn2"), f"{name}_relu2")
    y = conv(y, planes * expansion, 1, 1, name=f"{name}_conv3")
    y = bn(y, f"{name}_bn3")
    if stride != 1 or x.shape[-1] != planes * expansion:
        shortcut = conv(x, planes * expansion, 1, stride, name=f"{name}_proj")
        shortcut = bn(shortcut, f"{name}_proj_bn")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return relu(y, f"{name}_out")


def cifar_resnet(blocks, bottleneck, num_classes=100, include_top=True,
                 input_shape=(32, 32, 3), pooling=None, base_width=64,
                 name="cifar_resnet"):
    """Build a CIFAR ResNet with ``blocks`` units per section (4 sections).

    ``base_width`` (64 in the paper) scales every section's width; small values
    give tiny models for tests and demos.
    """
    inputs = image_input(input_shape)
    x = preprocess(inputs)
    x = conv(x, base_width, 3, 1, name="stem_conv")
    x = relu(bn(x, "stem_bn"), "stem_relu")
    unit = _bottleneck_unit if bottleneck else _basic_unit
    for s, count in enumerate(blocks, start=1):
        planes = base_width * 2 ** (s - 1)
        for b in range(count):
            stride = 2 if (s > 1 and b == 0) else 1
            x = unit(x, planes, stride, name=f"block{s}_{b + 1}")
        x = stage_marker(x, s)
    outputs = classifier_top(x, num_classes, include_top, pooling)
    return keras.Model(inputs, outputs, name=name)


_REFERENCE = ("kuangliu/pytorch-cifar models/resnet.py (also luanyunteng/"
              "pytorch-be-your-own-teacher); 10-class counts 11,173,962 / 23,520,842 / "
              "42,512,970 / 58,156,618 + the 100-class head")

_SPECS = {
    "cifar_resnet18": ((2, 2, 2, 2), False, 11_220_132),
    "cifar_resnet50": ((3, 4, 6, 3), True, 23_705_252),
    "cifar_resnet101": ((3, 4, 23, 3), True, 42_697_380),
    "cifar_resnet152": ((3, 8, 36, 3), True, 58_341_028),
}


def _make_builder(arch_name, blocks, bottleneck):
    def builder(num_classes=100, include_top=True, input_shape=(32, 32, 3), pooling=None,
                **kwargs):
        return cifar_resnet(blocks, bottleneck, num_classes=num_classes,
                            include_top=include_top, input_shape=input_shape,
                            pooling=pooling, name=arch_name, **kwargs)
    builder.__name__ = arch_name
    builder.__doc__ = f"{arch_name}: CIFAR ResNet with {blocks} units per section."
    return builder


for _name, (_blocks, _bottleneck, _ref) in _SPECS.items():
    globals()[_name] = register(
        _name, input_size=32, num_classes=100, family="cifar_resnet",
        description=f"CIFAR ResNet-{_name[len('cifar_resnet'):]} (3x3 stride-1 stem, "
                    "4 sections, 32x32 inputs)",
        reference_params=_ref, reference=_REFERENCE)(_make_builder(_name, _blocks, _bottleneck))
