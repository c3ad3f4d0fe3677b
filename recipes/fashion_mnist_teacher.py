"""The zoo's Fashion-MNIST teacher: fmnist_cnn_w32 on all 60,000 training images.

This is how ``fmnist_cnn_w32.kdzoo_teacher_full`` was made (its card records
this command, the seed and the measured test accuracy). The main job
(``recipes/fashion_mnist.py``) never trains a teacher: it loads this one from
the zoo, as a user would.

    python recipes/fashion_mnist_teacher.py --workdir /tmp/fmnist_teacher           # train
    python recipes/fashion_mnist_teacher.py --workdir /tmp/fmnist_teacher --export  # + card

The second teacher of section 3.6a (the teacher ensemble, issue 24) is the same
architecture and recipe with another seed, shipped under its own card:

    python recipes/fashion_mnist_teacher.py --workdir /tmp/fmnist_teacher_seed1 --seed 1 \
        --card fmnist_cnn_w32.kdzoo_teacher_full_seed1 --export

Training: Adam with the paper's decoupled weight decay, linear warm-up and
cosine decay (``kdzoo.distill.paper_optimizer``), pad-3 random crop and flip,
batch 128. Rerun the same command after an interruption: it resumes. The
minival numbers it prints are not held out (minival is part of the 60,000);
the test split is the measurement.
"""

import functools

from absl import app, flags

import common

common.define_common_flags("/tmp/kdzoo/fashion_mnist_teacher")
flags.DEFINE_bool("export", False, "Write the trained teacher into the zoo (weights + card).")
flags.DEFINE_string("card", None, "With --export: the zoo card's name (default "
                    "fmnist_cnn_w32.kdzoo_teacher_full; section 3.6a's second teacher: "
                    "fmnist_cnn_w32.kdzoo_teacher_full_seed1).")
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS

ARCH, CARD = "fmnist_cnn_w32", "fmnist_cnn_w32.kdzoo_teacher_full"
SECOND = dict(card="fmnist_cnn_w32.kdzoo_teacher_full_seed1", seed=1)  # section 3.6a's


def card_name():
    """``--card`` (default :data:`CARD`): it must name this recipe's architecture."""
    name = FLAGS.card or CARD
    if not name.startswith(ARCH + ".") or len(name) == len(ARCH) + 1:
        common.fail(f"--card={name}: a card of this recipe is '{ARCH}.<tag>' (e.g. "
                    f"{SECOND['card']}).")
    return name
CONFIG = dict(epochs=30, batch_size=128, lr=3e-3, weight_decay=1e-4, warmup_steps=500)


def make_run():
    import kdzoo
    from kdzoo.distill import paper_optimizer
    from kdzoo.train import SupervisedRun
    c = dict(CONFIG, epochs=FLAGS.epochs or CONFIG["epochs"],
             batch_size=FLAGS.batch_size or CONFIG["batch_size"])
    return SupervisedRun(
        dataset="fashion_mnist", train_split="train", model=functools.partial(
            kdzoo.load, ARCH, weights=None),
        optimizer=lambda total: paper_optimizer(c["lr"], total, c["warmup_steps"],
                                                c["weight_decay"]),
        workdir=FLAGS.workdir, epochs=c["epochs"], batch_size=c["batch_size"], crop="pad",
        seed=FLAGS.seed, data_dir=FLAGS.data_dir, strategy=FLAGS.strategy,
        overwrite=FLAGS.overwrite, params=c, **common.run_flags(False))


def export(command):
    """The trained teacher as a zoo card, its top-1 measured through kdzoo.load."""
    import keras

    from kdzoo.zoo.card_writer import export_card
    from kdzoo.data import fashion_mnist
    from kdzoo.evaluation import top1
    from kdzoo.train.run_dir import model_file
    images, labels = fashion_mnist.load("test", FLAGS.data_dir)
    evaluate = lambda m: top1(  # noqa: E731
        m.predict(images.astype("float32"), batch_size=1000, verbose=0), labels)
    model = keras.saving.load_model(model_file(FLAGS.workdir))
    return export_card(model, card_name(), dataset="fashion_mnist", stage="teacher",
                       produced_by=command, evaluate=evaluate,
                       extra=dict(seed=FLAGS.seed, train_images=60000, **CONFIG))


def main(argv):
    import sys

    from kdzoo.train import run_supervised
    del argv
    name = card_name()
    run = make_run()
    if FLAGS.dry_run:
        return common.dry_run(run, teacher=None, student=ARCH)
    metrics = run_supervised(run)
    print(f"test accuracy {metrics['test']['accuracy']:.4f}")
    if FLAGS.export:
        command = "python recipes/fashion_mnist_teacher.py " + " ".join(sys.argv[1:])
        print(f"exported {name}: test top-1 {export(command)['top1']}%")


if __name__ == "__main__":
    app.run(common.guarded(main))
