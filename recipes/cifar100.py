"""Self distillation on CIFAR-100 (Zhang et al., ICCV 2019), with its two baselines.

    python recipes/cifar100.py --arch cifar_resnet18 --mode self_distillation
    python recipes/cifar100.py --arch cifar_resnet18 --mode deep_supervision
    python recipes/cifar100.py --arch cifar_resnet18 --mode plain
    python recipes/cifar100.py --smoke --workdir /tmp/smoke_cifar

Schedule (our reading of the paper's setup): SGD momentum 0.9, weight decay 5e-4,
batch 128, lr 0.1 divided by 10 at 50% and 75% of 200 epochs; pad-4 random crop
and horizontal flip. alpha 0.3, T 3, feature weight 0.03 as in the paper's code.
"""

import functools

from absl import app, flags

import common

ARCHS = ("cifar_vgg19_bn", "cifar_resnet18", "cifar_resnet50", "cifar_resnet101",
         "cifar_resnet152", "cifar_resnext29_8x64d", "cifar_wrn20_8", "cifar_wrn44_8",
         "cifar_wrn28_12", "cifar_pyramidnet101_240")

common.define_common_flags("/tmp/kdzoo/cifar100")
flags.DEFINE_enum("arch", "cifar_resnet18", ARCHS, "One of the paper's ten architectures.")
flags.DEFINE_enum("mode", "self_distillation", ["self_distillation", "deep_supervision", "plain"],
                  "self_distillation (CE + KL + hint), deep_supervision (same exits, CE "
                  "only) or plain (the backbone alone, CE).")
flags.DEFINE_float("alpha", 0.3, "Weight of KL-from-deepest for shallow exits (1-alpha on CE).")
flags.DEFINE_float("temperature", 3.0, "Distillation temperature.")
flags.DEFINE_float("feature_weight", 0.03, "Weight of the feature hint.")
flags.DEFINE_float("lr", 0.1, "Peak SGD learning rate.")
flags.adopt_module_key_flags(common)  # --help lists the common flags too
FLAGS = flags.FLAGS


def sgd_steps(lr, total_steps):
    import keras
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [int(0.5 * total_steps), int(0.75 * total_steps)], [lr, lr / 10, lr / 100])
    return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=5e-4)


def main(argv):
    del argv
    import kdzoo
    from kdzoo.train import SupervisedRun, run_supervised

    smoke = FLAGS.smoke
    if smoke:  # a tiny net with the same stage layout, at CIFAR's 32x32x3
        model = functools.partial(kdzoo.load, "fmnist_cnn_w16", weights=None, num_classes=100,
                                  input_shape=(32, 32, 3))
    else:
        model = functools.partial(kdzoo.load, FLAGS.arch, weights=None, num_classes=100)
    run = SupervisedRun(
        dataset="cifar100", model=model, optimizer=functools.partial(sgd_steps, FLAGS.lr),
        workdir=FLAGS.workdir, method="labels" if FLAGS.mode == "plain" else FLAGS.mode,
        epochs=FLAGS.epochs or (1 if smoke else 200), batch_size=FLAGS.batch_size or (4 if smoke else 128),
        image_size=32, crop="pad", alpha=FLAGS.alpha, temperature=FLAGS.temperature,
        feature_weight=FLAGS.feature_weight, data_dir=FLAGS.data_dir, strategy=FLAGS.strategy,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.xla, seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        num_train_examples=common.SMOKE_EXAMPLES if smoke else None,
        eval_batch_size=8 if smoke else 500, verbose=2 if smoke else "auto",
        params={"arch": FLAGS.arch, "mode": FLAGS.mode}, overwrite=FLAGS.overwrite,
        **common.run_flags(smoke))
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
