"""The offline main job: both methods on Fashion-MNIST, on a 2-core CPU, in minutes.

Trains a teacher (fmnist_cnn_w32) on labels; distills a 4x smaller student
(fmnist_cnn_w16) by FunMatch and by a fixed teacher (fix/rs); trains the same
student on labels alone; self-distills the student's architecture and trains
its deep-supervision twin. Everything is evaluated on the 10,000 test images;
a table is printed and metrics.json + PNG plots are written to --workdir.
Interrupt it at any time and rerun: finished stages are skipped and the
running one resumes from its last checkpoint.

    python recipes/fashion_mnist.py                                  # the demo
    python recipes/fashion_mnist.py --long --seeds 0,1,2 --workdir /tmp/fm_long
"""

import json
import os

from absl import app, flags

import common

common.define_common_flags("/tmp/kdzoo/fashion_mnist")
flags.DEFINE_integer("teacher_epochs", 3, "Teacher epochs (demo scale).")
flags.DEFINE_bool("long", False, "The longer comparison: 2x the epochs of every stage.")
flags.DEFINE_string("seeds", None, "Comma-separated seeds: repeat the whole comparison "
                    "per seed (in <workdir>/seed-N) and report mean and spread.")
flags.DEFINE_integer("train_examples", None, "Train on the first N training images only "
                     "(quick checks; default: all 55,000).")
flags.DEFINE_bool("plots", True, "Write PNG plots.")
flags.DEFINE_bool("export_pretrained", False, "Write the teacher, the FunMatch student and the "
                  "self-distilled network into kdzoo/pretrained (weights + model cards).")
flags.adopt_module_key_flags(common)  # --help lists the common flags too
FLAGS = flags.FLAGS

TEACHER, STUDENT = "fmnist_cnn_w32", "fmnist_cnn_w16"
STUDENT_EPOCHS = 3


def adam_cosine(lr):
    import keras
    return lambda total: keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(lr, total), global_clipnorm=1.0)


def stages(workdir, seed, scale):
    """name -> run description; each stage lives in workdir/name."""
    import keras

    import kdzoo
    from kdzoo.train import FunMatchRun, SupervisedRun

    teacher_path = os.path.join(workdir, "teacher", "model.keras")
    student = lambda: kdzoo.load(STUDENT, weights=None)  # noqa: E731
    common_args = dict(dataset="fashion_mnist", seed=seed, workdir=workdir, batch_size=FLAGS.batch_size or 128,
                       strategy=FLAGS.strategy, data_dir=FLAGS.data_dir, verbose="auto",
                       num_train_examples=FLAGS.train_examples, overwrite=FLAGS.overwrite,
                       **common.run_flags(False))
    epochs = FLAGS.epochs or STUDENT_EPOCHS * scale
    supervised = dict(crop="pad", **common_args)  # pad-2 random crop + flip, as for CIFAR
    distill = dict(teacher=lambda: keras.saving.load_model(teacher_path), student=student,
                   temperature=1.0, lr=3e-3, weight_decay=1e-4, warmup_steps=100,
                   epochs=epochs, image_size=28, **common_args)
    return {
        "teacher": SupervisedRun(model=lambda: kdzoo.load(TEACHER, weights=None),
                                 optimizer=adam_cosine(3e-3), method="labels",
                                 epochs=FLAGS.teacher_epochs * scale, **supervised),
        "funmatch": FunMatchRun(variant="funmatch", distiller_kwargs=dict(
            inception_area_range=(0.25, 1.0)), **distill),
        "fix_rs": FunMatchRun(variant="fix/rs", **distill),
        "labels": SupervisedRun(model=student, optimizer=adam_cosine(3e-3), method="labels",
                                epochs=epochs, **supervised),
        "self_distillation": SupervisedRun(model=student, optimizer=adam_cosine(3e-3),
                                           method="self_distillation", epochs=epochs,
                                           **supervised),
        "deep_supervision": SupervisedRun(model=student, optimizer=adam_cosine(3e-3),
                                          method="deep_supervision", epochs=epochs,
                                          **supervised),
    }


def run_all(workdir, seed, scale):
    from kdzoo.train import FunMatchRun, run_funmatch, run_supervised
    results = {}
    for name, run in stages(workdir, seed, scale).items():
        run.workdir = os.path.join(workdir, name)  # one folder per stage
        done = os.path.join(run.workdir, "metrics.json")
        if os.path.exists(done) and not FLAGS.overwrite:
            print(f"[{name}] already done: {done}")
        else:
            print(f"[{name}] training ...")
            (run_funmatch if isinstance(run, FunMatchRun) else run_supervised)(run)
        with open(done, encoding="utf-8") as f:
            results[name] = json.load(f)
    return results


def dry_run(scale):
    """One JSON line: the FunMatch stage's plan, and every stage's step count."""
    from kdzoo.train import plan
    runs = stages(FLAGS.workdir, FLAGS.seed, scale)
    _, info = plan(runs["funmatch"])
    info.update(teacher=TEACHER, student=STUDENT,
                stages={name: plan(run)[1]["total_steps"] for name, run in runs.items()})
    print(json.dumps(info, sort_keys=True))


def main(argv):
    del argv
    from kdzoo import report
    scale = 2 if FLAGS.long else 1
    if FLAGS.dry_run:
        return dry_run(scale)
    seeds = [int(s) for s in FLAGS.seeds.split(",")] if FLAGS.seeds else [FLAGS.seed]
    summaries = []
    for seed in seeds:
        workdir = FLAGS.workdir if len(seeds) == 1 else os.path.join(FLAGS.workdir, f"seed-{seed}")
        run_all(workdir, seed, scale)
        summary = report.summary_of(workdir, FLAGS.data_dir)
        summaries.append(summary)
        print(report.format_table(summary))
        if FLAGS.plots:
            for path in report.plot_summary(summary, workdir):
                print(f"wrote {path}")
    if FLAGS.export_pretrained:
        import sys
        command = "python recipes/fashion_mnist.py " + " ".join(sys.argv[1:])
        for card in report.export_pretrained(FLAGS.workdir, command):
            print(f"exported {card['name']}: test top-1 {card['top1']}%")
    if len(seeds) > 1:
        print(report.format_seed_table(summaries, seeds))
        report.write_seed_summary(summaries, seeds, FLAGS.workdir)


if __name__ == "__main__":
    app.run(common.guarded(main))
