"""The ten CIFAR-100 architectures of the self-distillation paper.

Parameter counts are compared with two independent references: the number in
the registry (``reference_params``, the standard CIFAR-100 definition named in
``reference``) and the arithmetic of ``tests/reference/cifar_param_counts.py``.
References (trainable parameters, 100 classes; BN running stats excluded):

* cifar_resnet18/50/101/152 -- kuangliu/pytorch-cifar models/resnet.py (the BYOT
  code uses it): 11,220,132 / 23,705,252 / 42,697,380 / 58,341,028
  (with 10 classes the well-known 11,173,962 / 23,520,842 / 42,512,970 / 58,156,618).
* cifar_vgg19_bn -- kuangliu/pytorch-cifar models/vgg.py: 20,086,692 (10 classes: 20,040,522).
* cifar_resnext29_8x64d -- prlz77/ResNeXt.pytorch: 34,518,948 (paper: 34.4M, 10 classes).
* cifar_wrn20_8 / 44_8 / 28_12 -- xternalz/WideResNet-pytorch: 17,204,276 /
  41,991,220 / 52,587,060 (WRN-28-10, 10 classes: 36,479,194 = paper's 36.5M).
* cifar_pyramidnet101_240 -- dyhan0920/PyramidNet-PyTorch, bottleneck: 13,688,174.
"""

import keras
import numpy as np
import pytest
from reference import cifar_param_counts as counts

from kdzoo.models import (cifar_pyramidnet, cifar_resnet, cifar_resnext, cifar_vgg,
                          cifar_wrn)
from kdzoo.models.common import stage_names
from kdzoo.zoo.registry import architectures

EXPECTED = {
    "cifar_vgg19_bn": (20_086_692, 4),
    "cifar_resnet18": (11_220_132, 4),
    "cifar_resnet50": (23_705_252, 4),
    "cifar_resnet101": (42_697_380, 4),
    "cifar_resnet152": (58_341_028, 4),
    "cifar_resnext29_8x64d": (34_518_948, 3),
    "cifar_wrn20_8": (17_204_276, 3),
    "cifar_wrn44_8": (41_991_220, 3),
    "cifar_wrn28_12": (52_587_060, 3),
    "cifar_pyramidnet101_240": (13_688_174, 3),
}


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _arithmetic(name):
    if name.startswith("cifar_resnet"):
        blocks, bottleneck, _ = cifar_resnet._SPECS[name]
        return counts.resnet_params(blocks, bottleneck, 100)
    if name == "cifar_vgg19_bn":
        return counts.vgg_params(100)
    if name == "cifar_resnext29_8x64d":
        return counts.resnext_params(100)
    if name.startswith("cifar_wrn"):
        depth, k, _ = cifar_wrn._SPECS[name]
        return counts.wrn_params(depth, k, 100)
    return counts.pyramidnet_params(101, 240, 100)


def test_all_ten_registered_with_reference():
    archs = architectures()
    for name in EXPECTED:
        arch = archs[name]
        assert arch.input_size == 32 and arch.num_classes == 100
        assert arch.reference_params == EXPECTED[name][0]
        assert arch.reference


def test_reference_arithmetic_reproduces_published_counts():
    # Published 10-class counts of the same definitions (sanity of the arithmetic).
    assert counts.resnet_params((2, 2, 2, 2), False, 10) == 11_173_962
    assert counts.resnet_params((3, 4, 6, 3), True, 10) == 23_520_842
    assert counts.vgg_params(10) == 20_040_522
    assert counts.wrn_params(28, 10, 10) == 36_479_194
    assert round(counts.resnext_params(10) / 1e6, 1) == 34.4


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_count_and_stages(name):
    keras.backend.clear_session()
    model = architectures()[name].builder(num_classes=100, include_top=True,
                                          input_shape=(32, 32, 3), pooling=None)
    reference, sections = EXPECTED[name]
    assert _trainable(model) == reference == _arithmetic(name)
    assert stage_names(model) == [f"stage{i}" for i in range(1, sections + 1)]
    assert model.output.shape == (None, 100)
    assert model.get_layer("preprocess") is not None
    assert isinstance(model.get_layer("head"), keras.layers.Dense)
    # 3x3 stride-1 stem: the first section keeps (a multiple of) 32x32 resolution
    first_conv = next(l for l in model.layers if isinstance(l, keras.layers.Conv2D))
    assert first_conv.kernel_size == (3, 3) and first_conv.strides == (1, 1)
    keras.backend.clear_session()


TINY = {
    "resnet_basic": lambda: cifar_resnet.cifar_resnet((1, 1, 1, 1), False, num_classes=7,
                                                      base_width=4),
    "resnet_bottleneck": lambda: cifar_resnet.cifar_resnet((1, 1, 1, 1), True,
                                                           num_classes=7, base_width=4),
    "vgg": lambda: cifar_vgg.cifar_vgg(num_classes=7, width_divisor=16),
    "resnext": lambda: cifar_resnext.cifar_resnext(11, cardinality=2, base_width=4,
                                                   widen_factor=1, num_classes=7),
    "wrn": lambda: cifar_wrn.cifar_wrn(10, 1, num_classes=7, base_width=4),
    "pyramidnet": lambda: cifar_pyramidnet.cifar_pyramidnet(11, 12, num_classes=7,
                                                            base_width=4),
}


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_variants_run_and_round_trip(family, tmp_path):
    model = TINY[family]()
    x = np.random.RandomState(0).randint(0, 256, (2, 32, 32, 3)).astype("uint8")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, 7) and np.all(np.isfinite(y))
    path = str(tmp_path / f"{family}.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), y, rtol=1e-5, atol=1e-5)


def test_include_top_false_and_pooling():
    build = architectures()["cifar_resnet18"].builder
    features = build(num_classes=100, include_top=False, input_shape=(32, 32, 3),
                     pooling=None, base_width=4)
    assert features.output.shape == (None, 4, 4, 32)
    pooled = build(num_classes=100, include_top=False, input_shape=(32, 32, 3),
                   pooling="avg", base_width=4)
    assert pooled.output.shape == (None, 32)
    with pytest.raises(ValueError, match="pooling"):
        build(num_classes=100, include_top=False, input_shape=(32, 32, 3), pooling="sum")


def test_pyramidnet_shortcut_is_zero_padded_identity():
    layer = cifar_pyramidnet.ChannelZeroPad(3)
    x = np.arange(2 * 2 * 2 * 2, dtype="float32").reshape(2, 2, 2, 2)
    y = keras.ops.convert_to_numpy(layer(x))
    assert y.shape == (2, 2, 2, 5)
    np.testing.assert_array_equal(y[..., :2], x)
    assert not y[..., 2:].any()
    assert cifar_pyramidnet.ChannelZeroPad.from_config(layer.get_config()).extra_channels == 3
