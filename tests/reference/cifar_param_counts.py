"""Trainable-parameter counts of the authors' PyTorch CIFAR models, by independent arithmetic.

Test oracles (not library code): each function counts the parameters of the
reference PyTorch definition named in its docstring, layer by layer, without
building a model, so ``tests/zoo/test_cifar_models.py`` checks kdzoo's Keras
builds against them (PyTorch convention: trainable parameters only).
"""

from kdzoo.models.cifar_pyramidnet import unit_widths
from kdzoo.models.cifar_vgg import VGG19_CFG
from kdzoo.models.cifar_wrn import units_per_section

def resnet_params(blocks, bottleneck, num_classes, width=64):
    """Trainable parameters of kuangliu's PyTorch definition (independent arithmetic)."""
    expansion = 4 if bottleneck else 1
    total = 3 * 9 * width + 2 * width  # stem conv + BN
    in_ch = width
    for s, count in enumerate(blocks, start=1):
        planes = width * 2 ** (s - 1)
        for b in range(count):
            stride = 2 if (s > 1 and b == 0) else 1
            if bottleneck:
                total += in_ch * planes + 2 * planes
                total += planes * planes * 9 + 2 * planes
                total += planes * planes * 4 + 2 * planes * 4
            else:
                total += in_ch * planes * 9 + 2 * planes
                total += planes * planes * 9 + 2 * planes
            if stride != 1 or in_ch != planes * expansion:
                total += in_ch * planes * expansion + 2 * planes * expansion
            in_ch = planes * expansion
    return total + in_ch * num_classes + num_classes


def vgg_params(num_classes, cfg=VGG19_CFG):
    """Trainable parameters of kuangliu's PyTorch VGG19 (independent arithmetic)."""
    total, in_ch = 0, 3
    for widths in cfg:
        for width in widths:
            total += in_ch * width * 9 + width + 2 * width
            in_ch = width
    return total + in_ch * num_classes + num_classes


def resnext_params(num_classes, depth=29, cardinality=8, base_width=64, widen_factor=4):
    """Trainable parameters of prlz77's PyTorch CifarResNeXt (independent arithmetic)."""
    total, in_ch = 3 * 64 * 9 + 2 * 64, 64
    for s in range(3):
        out = 64 * widen_factor * 2 ** s
        d = cardinality * int(base_width * out / (widen_factor * 64.0))
        for _ in range((depth - 2) // 9):
            total += in_ch * d + 2 * d + d * (d // cardinality) * 9 + 2 * d + d * out + 2 * out
            if in_ch != out:
                total += in_ch * out + 2 * out
            in_ch = out
    return total + in_ch * num_classes + num_classes


def wrn_params(depth, k, num_classes):
    """Trainable parameters of xternalz's PyTorch WideResNet (independent arithmetic)."""
    n = units_per_section(depth)
    total, in_ch = 3 * 16 * 9, 16
    for s in range(3):
        out = 16 * k * 2 ** s
        for _ in range(n):
            total += 2 * in_ch + in_ch * out * 9 + 2 * out + out * out * 9
            if in_ch != out:
                total += in_ch * out
            in_ch = out
    return total + 2 * in_ch + in_ch * num_classes + num_classes


def pyramidnet_params(depth, alpha, num_classes):
    """Trainable parameters of dyhan0920's PyTorch PyramidNet (independent arithmetic)."""
    units, _ = unit_widths(depth, alpha)
    total = 3 * 16 * 9 + 2 * 16
    for in_ch, planes, _ in units:
        total += 2 * in_ch + in_ch * planes + 2 * planes + planes * planes * 9
        total += 2 * planes + planes * planes * 4 + 2 * planes * 4
    final = units[-1][1] * 4
    return total + 2 * final + final * num_classes + num_classes
