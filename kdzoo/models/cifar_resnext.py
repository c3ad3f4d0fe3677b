"""CIFAR ResNeXt-29 (8x64d).

Xie et al. 2017, "Aggregated Residual Transformations", CIFAR variant, in the
definition of prlz77/ResNeXt.pytorch (``models/model.py``, CifarResNeXt with
cardinality 8, base width 64, widen factor 4): a 3x3 conv stem (64) with BN +
ReLU, three sections of three bottleneck units (1x1 reduce to D, grouped 3x3
with 8 groups, 1x1 expand; D = 512/1024/2048, outputs 256/512/1024; strides
1/2/2; 1x1 projection shortcut where the width changes), global average
pooling, one Dense layer. The paper reports 34.4M parameters (CIFAR-10).
Sections end in ``stage1..stage3``.
"""

import keras

from kdzoo.models.cifar_resnet import bn, conv, preprocess, relu
from kdzoo.models.common import classifier_top, image_input, stage_marker
from kdzoo.zoo.registry import register


def _unit(x, out_channels, stride, cardinality, base_width, widen_factor, name):
    width_ratio = out_channels / (widen_factor * 64.0)
    d = cardinality * int(base_width * width_ratio)
    y = conv(x, d, 1, 1, name=f"{name}_reduce")
    y = relu(bn(y, f"{name}_reduce_bn"), f"{name}_reduce_relu")
    y = conv(y, d, 3, stride, groups=cardinality, name=f"{name}_group_conv")
    y = relu(bn(y, f"{name}_group_bn"), f"{name}_group_relu")
    y = conv(y, out_channels, 1, 1, name=f"{name}_expand")
    y = bn(y, f"{name}_expand_bn")
    shortcut = x
    if x.shape[-1] != out_channels:
        shortcut = conv(x, out_channels, 1, stride, name=f"{name}_proj")
        shortcut = bn(shortcut, f"{name}_proj_bn")
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return relu(y, f"{name}_out")


def cifar_resnext(depth=29, cardinality=8, base_width=64, widen_factor=4, num_classes=100,
                  include_top=True, input_shape=(32, 32, 3), pooling=None, stem_width=64,
                  name="cifar_resnext29_8x64d"):
    if (depth - 2) % 9:
        raise ValueError(f"ResNeXt depth must be 9n+2, got {depth}.")
    per_section = (depth - 2) // 9
    inputs = image_input(input_shape)
    x = preprocess(inputs)
    x = conv(x, stem_width, 3, 1, name="stem_conv")
    x = relu(bn(x, "stem_bn"), "stem_relu")
    for s in range(1, 4):
        out_channels = stem_width * widen_factor * 2 ** (s - 1)
        for b in range(per_section):
            stride = 2 if (s > 1 and b == 0) else 1
            x = _unit(x, out_channels, stride, cardinality, base_width, widen_factor,
                      name=f"block{s}_{b + 1}")
        x = stage_marker(x, s)
    outputs = classifier_top(x, num_classes, include_top, pooling)
    return keras.Model(inputs, outputs, name=name)


@register(
    "cifar_resnext29_8x64d", input_size=32, num_classes=100,
    family="cifar_resnext",
    description="CIFAR ResNeXt-29 8x64d (3 sections, grouped 3x3 convs)",
    reference_params=34_518_948,
    reference="prlz77/ResNeXt.pytorch models/model.py CifarResNeXt(8, 29, 100, 64, 4); "
              "Xie et al. 2017 report 34.4M (34,426,698 with 10 classes)")
def cifar_resnext29_8x64d(num_classes=100, include_top=True, input_shape=(32, 32, 3),
                          pooling=None, **kwargs):
    """CIFAR ResNeXt-29, cardinality 8, bottleneck width 64d."""
    return cifar_resnext(29, 8, num_classes=num_classes, include_top=include_top,
                         input_shape=input_shape, pooling=pooling, **kwargs)

