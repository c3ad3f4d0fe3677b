"""Every zoo architecture; importing this package registers them all."""

from kdzoo.models import (  # noqa: F401
    bit,
    cifar_pyramidnet,
    cifar_resnet,
    cifar_resnext,
    cifar_vgg,
    cifar_wrn,
    fmnist,
    mobilenet,
)
from kdzoo.models.common import stage_names, stage_outputs  # noqa: F401
