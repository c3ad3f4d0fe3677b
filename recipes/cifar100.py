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
images. Augmentation: pad-4 random crop and horizontal flip. The authors add
AutoAugment's CIFAR-10 policy and Cutout (16 px) (lines 34-38); kdzoo's input
pipeline has neither, so expect their numbers to be somewhat higher.
"""

import dataclasses
import functools

from absl import app, flags

import common

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
flags.DEFINE_bool("minival", False, "Hold out the last 1,000 training images as minival "
                  "(train on 49,000) instead of training on all 50,000.")
flags.adopt_module_key_flags(common)  # --help lists the common flags too
FLAGS = flags.FLAGS


def sgd_steps(lr, weight_decay, epochs, total_steps):
    """``TorchSGD`` with the official per-epoch schedule, for ``total_steps`` steps."""
    from kdzoo.distill.torch_sgd import TorchSGD, official_schedule
    steps_per_epoch = max(1, total_steps // epochs)
    return TorchSGD(official_schedule(steps_per_epoch, epochs, lr), momentum=0.9,
                    weight_decay=weight_decay)


def main(argv):
    del argv
    import kdzoo
    from kdzoo.data import get_spec
    from kdzoo.train import SupervisedRun, run_supervised

    smoke = FLAGS.smoke
    if smoke:  # a tiny net with the same stage layout, at CIFAR's 32x32x3
        model = functools.partial(kdzoo.load, "fmnist_cnn_w16", weights=None, num_classes=100,
                                  input_shape=(32, 32, 3))
    else:
        model = functools.partial(kdzoo.load, FLAGS.arch, weights=None, num_classes=100)
    spec = get_spec("cifar100")
    if not FLAGS.minival:
        spec = dataclasses.replace(spec, train_split="train")  # all 50,000
    epochs = FLAGS.epochs or (1 if smoke else OFFICIAL_EPOCHS)
    run = SupervisedRun(
        dataset=spec, model=model,
        optimizer=functools.partial(sgd_steps, FLAGS.lr, FLAGS.weight_decay, epochs),
        workdir=FLAGS.workdir, method="labels" if FLAGS.mode == "plain" else FLAGS.mode,
        epochs=epochs, batch_size=FLAGS.batch_size or (4 if smoke else 128),
        image_size=32, crop="pad", alpha=FLAGS.alpha, temperature=FLAGS.temperature,
        feature_weight=FLAGS.feature_weight, data_dir=FLAGS.data_dir, strategy=FLAGS.strategy,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.xla, seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        num_train_examples=common.SMOKE_EXAMPLES if smoke else None,
        eval_batch_size=8 if smoke else 500, verbose=2 if smoke else "auto",
        params={"arch": FLAGS.arch, "mode": FLAGS.mode, "train_split": spec.train_split,
                "optimizer": "TorchSGD(momentum=0.9, coupled weight decay)",
                "weight_decay": FLAGS.weight_decay, "lr": FLAGS.lr},
        overwrite=FLAGS.overwrite, **common.run_flags(smoke))
    if FLAGS.dry_run:
        common.dry_run(run, teacher=None if FLAGS.mode == "plain" else "self (deepest exit)",
                       student="fmnist_cnn_w16" if smoke else FLAGS.arch, mode=FLAGS.mode)
        return
    if not smoke:
        from kdzoo.data.pipeline import require_prepared
        require_prepared("cifar100", FLAGS.data_dir)
    with common.maybe_mock_data(smoke):
        metrics = run_supervised(run)
    print({k: round(v, 4) for k, v in metrics["test"].items()})


if __name__ == "__main__":
    app.run(common.guarded(main))
