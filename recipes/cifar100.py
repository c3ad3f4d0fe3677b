"""Self distillation on CIFAR-100 (Zhang et al., ICCV 2019), with its two baselines.

    python recipes/cifar100.py --arch cifar_resnet18 --mode self_distillation
    python recipes/cifar100.py --arch cifar_resnet18 --mode deep_supervision
    python recipes/cifar100.py --arch cifar_resnet18 --mode plain
    python recipes/cifar100.py --smoke --workdir /tmp/smoke_cifar

Schedule of the authors' ``train.py`` (ArchipLab-LinfengZhang/pytorch-self-distillation-final):
``torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=5e-4)`` (lines 24, 109, 142), batch
128 (line 23), 250 epochs (line 17) with the learning rate divided by 10 at the start
of epochs 83, 166 and 240 (lines 117-119); kdzoo's ``TorchSGD`` applies the weight
decay the PyTorch way (coupled L2 through the momentum, on every parameter). alpha
0.3, T 3, feature weight 0.03 (lines 18-22) with the official loss (soft CE without
T**2, adapter + L2-norm hint on exits 1 and 2 of 4).

Data: all 50,000 training images by default, as the authors. ``--minival`` holds out
the last 1,000 (kdzoo's ``cifar100`` spec) and trains on 49,000; without it the
``minival`` figures in metrics.json are measured on those same 1,000 *training*
images. Augmentation as the authors' default (lines 34-38): pad-4 random crop with
grey (128) padding, horizontal flip, AutoAugment's CIFAR-10 policy, Cutout (one 16 px
hole) (:mod:`kdzoo.data.autoaugment`); ``--noautoaugment`` keeps the crop and flip only,
as their ``--autoaugment False``.
"""

from absl import app, flags

import common
from kdzoo.train.recipe import SelfDistillRecipe, run_self_distill_recipe

ARCHS = ("cifar_vgg19_bn", "cifar_resnet18", "cifar_resnet50", "cifar_resnet101",
         "cifar_resnet152", "cifar_resnext29_8x64d", "cifar_wrn20_8", "cifar_wrn44_8",
         "cifar_wrn28_12", "cifar_pyramidnet101_240")
OFFICIAL_EPOCHS = 250

common.define_common_flags("/tmp/kdzoo/cifar100")
flags.DEFINE_enum("arch", "cifar_resnet18", ARCHS, "One of the paper's ten architectures.")
flags.DEFINE_enum("mode", "self_distillation", ["self_distillation", "deep_supervision", "plain"],
                  "self_distillation (CE + KD + hint), deep_supervision (same exits, CE "
                  "only) or plain (the backbone alone, CE).")
flags.DEFINE_float("alpha", 0.3, "Weight of KD-from-deepest for shallow exits (1-alpha on CE).")
flags.DEFINE_float("temperature", 3.0, "Distillation temperature.")
flags.DEFINE_float("feature_weight", 0.03, "Weight of the feature hint.")
flags.DEFINE_float("lr", 0.1, "Initial SGD learning rate (divided by 10 at epochs E//3, "
                   "2E//3 and E-10, as the authors' train.py).")
flags.DEFINE_float("weight_decay", 5e-4, "PyTorch-style (coupled L2) weight decay.")
flags.DEFINE_bool("autoaugment", True, "The authors' augmentation: AutoAugment's CIFAR-10 "
                  "policy and Cutout (16 px) after the pad crop and flip (train.py --autoaugment, "
                  "default True); --noautoaugment keeps the pad crop and flip only.")
flags.DEFINE_bool("minival", False, "Hold out the last 1,000 training images as minival "
                  "(train on 49,000) instead of training on all 50,000.")
flags.adopt_module_key_flags(common)  # --help lists the common flags too
FLAGS = flags.FLAGS


RECIPE = SelfDistillRecipe("cifar100", epochs=OFFICIAL_EPOCHS)


def main(argv):
    del argv
    run_self_distill_recipe(RECIPE, FLAGS)


if __name__ == "__main__":
    app.run(common.guarded(main))
