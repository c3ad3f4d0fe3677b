"""CIFAR Wide ResNets: WRN-20-8, WRN-44-8, WRN-28-12.

Zagoruyko & Komodakis 2016, "Wide Residual Networks", in the PyTorch definition
of xternalz/WideResNet-pytorch (``wideresnet.py``): a 3x3 conv stem (16, no
BN), three sections of pre-activation units (BN-ReLU-conv3x3-BN-ReLU-conv3x3)
at 16k/32k/64k channels with strides 1/2/2 and a 1x1 projection (taking the
activated input) where the width changes, then BN-ReLU, global average pooling
and one Dense layer. Dropout is off (the paper's CIFAR default for the BYOT
table). Sections end in ``stage1..stage3``; ``stage3`` sits after the final
BN-ReLU so it marks activated features.

Depth: the WRN paper's depth is 6n+4 (WRN-28 -> 4 units per section). The
self-distillation paper's WRN-20-8 and WRN-44-8 are not of that form and their
code was not published; for them we count depth like ResNet-20/44 (6n+2 ->
3 and 7 units per section). ``reference_params`` is the trainable parameter
count of that definition with 100 classes (WRN-28-10 with 10 classes gives the
paper's 36.5M: 36,479,194).
"""

import keras

from kdzoo.models.cifar_resnet import bn, conv, preprocess, relu
from kdzoo.models.common import classifier_top, image_input, stage_marker
from kdzoo.zoo.registry import register


def units_per_section(depth):
    """WRN units per section for ``depth`` (6n+4, else ResNet-style 6n+2)."""
    if (depth - 4) % 6 == 0:
        return (depth - 4) // 6
    if (depth - 2) % 6 == 0:
        return (depth - 2) // 6
    raise ValueError(f"WRN depth must be 6n+4 (or 6n+2), got {depth}.")


def _unit(x, out_channels, stride, dropout, name):
    in_channels = x.shape[-1]
    act = relu(bn(x, f"{name}_bn1"), f"{name}_relu1")
    y = conv(act, out_channels, 3, stride, name=f"{name}_conv1")
    y = relu(bn(y, f"{name}_bn2"), f"{name}_relu2")
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = conv(y, out_channels, 3, 1, name=f"{name}_conv2")
    if in_channels == out_channels and stride == 1:
        shortcut = x
    else:
        shortcut = conv(act, out_channels, 1, stride, name=f"{name}_proj")
    return keras.layers.Add(name=f"{name}_add")([y, shortcut])


def cifar_wrn(depth, widen_factor, num_classes=100, include_top=True,
              input_shape=(32, 32, 3), pooling=None, dropout=0.0, base_width=16,
              name=None):
    n = units_per_section(depth)
    inputs = image_input(input_shape)
    x = preprocess(inputs)
    x = conv(x, base_width, 3, 1, name="stem_conv")
    for s in range(1, 4):
        width = base_width * widen_factor * 2 ** (s - 1)
        for b in range(n):
            stride = 2 if (s > 1 and b == 0) else 1
            x = _unit(x, width, stride, dropout, name=f"block{s}_{b + 1}")
        if s == 3:
            x = relu(bn(x, "final_bn"), "final_relu")
        x = stage_marker(x, s)
    outputs = classifier_top(x, num_classes, include_top, pooling)
    return keras.Model(inputs, outputs, name=name or f"cifar_wrn{depth}_{widen_factor}")


_SPECS = {
    "cifar_wrn20_8": (20, 8, 17_204_276),
    "cifar_wrn44_8": (44, 8, 41_991_220),
    "cifar_wrn28_12": (28, 12, 52_587_060),
}


def _make_builder(arch_name, depth, k):
    def builder(num_classes=100, include_top=True, input_shape=(32, 32, 3), pooling=None,
                **kwargs):
        return cifar_wrn(depth, k, num_classes=num_classes, include_top=include_top,
                         input_shape=input_shape, pooling=pooling, name=arch_name, **kwargs)
    builder.__name__ = arch_name
    builder.__doc__ = f"{arch_name}: WRN-{depth}-{k} for 32x32 inputs."
    return builder


for _name, (_depth, _k, _ref) in _SPECS.items():
    globals()[_name] = register(
        _name, input_size=32, num_classes=100, family="cifar_wrn",
        description=f"CIFAR Wide ResNet-{_depth}-{_k} ({units_per_section(_depth)} "
                    "pre-activation units per section, 3 sections)",
        reference_params=_ref,
        reference="Zagoruyko & Komodakis 2016 as in xternalz/WideResNet-pytorch "
                  "wideresnet.py" + ("" if (_depth - 4) % 6 == 0 else
                                     "; depth counted 6n+2 like ResNet-20/44"),
    )(_make_builder(_name, _depth, _k))
