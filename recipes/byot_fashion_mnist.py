"""The BYOT table (Zhang et al. 2019) on Fashion-MNIST at 32 px: issue 28, "The table".

Three of the paper's ten families from the zoo at 1/8 of their width (fixed in
``STUDY`` before any run, sized by short runs: docs/self_distillation.md, "The
BYOT table on Fashion-MNIST"), each trained four ways on the same 10,000 images,
3 seeds each, same epochs and schedule: ``baseline`` (the plain network, CE),
``self_distillation`` (the journal version's heads, hint and loss),
``deep_supervision`` (the same exits, CE only) and ``kd`` (classical KD,
:mod:`kdzoo.distill.classical_kd`, from a larger zoo network: ``STUDY["kd"]``'s
teacher, trained once by ``baseline``'s recipe with seed 0 into
``<workdir>/teacher/<teacher>_w<width>`` before any kd run, and reused, frozen, by
every kd run of every arch and seed). Every run reports
last- and best-epoch top-1 (best chosen on the 5,000 held-out minival images,
never on the test set) of each exit and the ensemble on the 10,000 test images.

    python recipes/byot_fashion_mnist.py --dry_run            # the plan, one JSON line
    python recipes/byot_fashion_mnist.py --methods baseline,self_distillation,deep_supervision
    python recipes/byot_fashion_mnist.py --methods kd           # the teacher first, then kd
    python recipes/byot_fashion_mnist.py --arch cifar_vgg19_bn --seeds 0
    python recipes/byot_fashion_mnist.py --report_only        # measure what finished
    python recipes/byot_fashion_mnist.py --report_only --early_exit_repeats 0  # claims 1-4

Interrupt and rerun at any time: finished runs are skipped, the running one resumes.
Runs recorded in ``--evidence`` by an earlier report (on this machine or another, same
study settings: ``byot_recorded.py``) are kept and not trained again; commit the
evidence after each report so that the next session's machine trains only the rest.
"""

import functools
import os

from absl import app, flags

import byot_recorded
import byot_report as report
import common
import fashion_mnist_report
from kdzoo.train import study

common.define_common_flags("runs/byot_fashion_mnist")
flags.DEFINE_string("arch", None, "Comma-separated architectures (default: all of STUDY).")
flags.DEFINE_string("methods", None, "Comma-separated methods (default: all four).")
flags.DEFINE_string("seeds", None, "Comma-separated training seeds (default 0,1,2).")
flags.DEFINE_bool("report_only", False, "Train nothing: measure the finished runs.")
flags.DEFINE_string("evidence", report.EVIDENCE, "The evidence JSON (rows per exit).")
flags.DEFINE_integer("early_exit_repeats", 3, "Claim 5: timed windows per runner on the test "
                     "images for every finished SD run (0: claim 5 not measured).")
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS

STUDY = dict(  # fixed before any run; see docs/self_distillation.md, "The BYOT table"
    dataset="fashion_mnist_32", train_per_class=1000, subset_seed=0, image_size=32,
    epochs=15, batch_size=128, lr=0.1, weight_decay=5e-4, version="journal",
    alpha=0.3, temperature=3.0, feature_weight=0.03, mixed_precision="float32",
    crop="pad", pad_fill=0, flip=True, autoaugment=None, cutout=16,
    archs={"cifar_resnet18": {"base_width": 8}, "cifar_vgg19_bn": {"width_divisor": 8},
           "cifar_wrn20_8": {"base_width": 2}},
    methods=("baseline", "self_distillation", "deep_supervision", "kd"),
    seeds=(0, 1, 2),
    kd=dict(teacher="cifar_resnet18", teacher_build={"base_width": 16}, temperature=3.0,
            alpha=0.3),  # kdzoo.distill.classical_kd; the teacher: TEACHER_DIR below
    # Seconds per epoch (train + the minival/test report) of the seed-0 3-epoch sizing runs
    # (b9c48d5 + e1fcb2a's checkpoint interval, 2 vCPU, load ~6: docs/self_distillation.md); kd: est.
    # baseline + 13 s (the teacher's forward pass over 10,000 images), not measured.
    sizing_s_per_epoch={
        "cifar_resnet18": {"baseline": 29, "self_distillation": 39, "deep_supervision": 40,
                           "kd": 42},
        "cifar_vgg19_bn": {"baseline": 17, "self_distillation": 25, "deep_supervision": 30,
                           "kd": 30},
        "cifar_wrn20_8": {"baseline": 65, "self_distillation": 60, "deep_supervision": 57,
                          "kd": 78}},
    sizing_s_per_run=60)  # start-up (data, subset) + the final test evaluation and save
RUN_METHOD = {"baseline": "labels", "self_distillation": "self_distillation",
              "deep_supervision": "deep_supervision", "kd": "knowledge_distillation"}
TEACHER_DIR = "teacher"  # <workdir>/teacher/<teacher>_w<base_width>: the kd teacher's run
TEACHER_SEED = 0
# Estimated, not measured: training ~3x the teacher's forward pass (13 s per 10,000 images,
# as the kd estimate above) + its minival/test report (15,000 images, ~20 s) per epoch.
TEACHER_EST_S_PER_EPOCH = 59


def _pick(text, allowed, name, cast=str):
    chosen = tuple(cast(v) for v in text.split(",")) if text else tuple(allowed)
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        common.fail(f"--{name}: unknown {unknown}; choose from {', '.join(map(str, allowed))}.")
    return chosen


def settings():
    """STUDY with the command line's selection (a part of the table)."""
    archs = _pick(FLAGS.arch, STUDY["archs"], "arch")
    return dict(STUDY, archs={a: STUDY["archs"][a] for a in archs},
                epochs=FLAGS.epochs or STUDY["epochs"],  # another value: a sizing run only
                methods=_pick(FLAGS.methods, STUDY["methods"], "methods"),
                seeds=_pick(FLAGS.seeds, (0, 1, 2, 3, 4), "seeds", int) if FLAGS.seeds
                else STUDY["seeds"])


RUN_FIELDS = ("dataset", "epochs", "batch_size", "image_size", "crop", "pad_fill", "flip",
              "autoaugment", "cutout", "alpha", "temperature", "feature_weight",
              "train_per_class", "subset_seed", "mixed_precision")


def _steps(s):
    """Per data epoch / in all (one Keras epoch = one data epoch: one report line each)."""
    from kdzoo.train import total_steps
    per_epoch = total_steps(s["epochs"], 10 * s["train_per_class"], s["batch_size"]) // s["epochs"]
    return dict(log_every_steps=per_epoch, checkpoint_every_steps=5 * per_epoch,
                checkpoint_every_minutes=10.0)


def make_run(s, arch, method, seed, workdir, options=None, build=None, teacher=None):
    """The ``SupervisedRun`` of one (arch, method, seed); ``options``: run fields to override;
    ``build``: the zoo build options (default: the arch's in ``s["archs"]``); ``teacher``
    (kd): the teacher's ``.keras`` file (:func:`teacher_dir`'s run writes it)."""
    import kdzoo
    from kdzoo.train import SupervisedRun
    from kdzoo.train.recipe import _official_sgd
    model = functools.partial(kdzoo.load, arch, weights=None, num_classes=10,
                              input_shape=(32, 32, 1),
                              build_options=s["archs"][arch] if build is None else build)
    sgd = functools.partial(_official_sgd, s["lr"], s["weight_decay"], s["epochs"])
    return SupervisedRun(model=model, optimizer=sgd, workdir=workdir, method=RUN_METHOD[method],
                         seed=seed, best_epoch_report=True, eval_roles=("test",), verbose=0,
                         **_method_fields(s, method, teacher),
                         **{**_steps(s), **(options or {})})


def _method_fields(s, method, teacher):
    """STUDY's run fields, the exits' BYOT version, and kd's teacher, alpha and T."""
    fields = dict({k: s[k] for k in RUN_FIELDS}, version=s["version"] if method in (
        "self_distillation", "deep_supervision") else None)
    if method == "kd":
        if teacher is None:
            raise ValueError("method 'kd' needs teacher= (the kd teacher's model.keras).")
        fields.update(alpha=s["kd"]["alpha"], temperature=s["kd"]["temperature"],
                      teacher=teacher)
    return fields


def teacher_dir(s, workdir):
    """``<workdir>/teacher/cifar_resnet18_w16``: the one kd teacher run of the study."""
    kd = s["kd"]
    tag = "".join(f"_w{v}" if k == "base_width" else f"_{k}{v}"
                  for k, v in sorted(kd["teacher_build"].items()))
    return os.path.join(workdir, TEACHER_DIR, kd["teacher"] + tag)


def teacher_entry(s, workdir, options=None):
    """``(key, run)`` of the kd teacher: ``baseline``'s recipe (same data, schedule and
    report) at ``STUDY["kd"]``'s arch and width, seed 0."""
    kd = s["kd"]
    run = make_run(s, kd["teacher"], "baseline", TEACHER_SEED, teacher_dir(s, workdir), options,
                   build=kd["teacher_build"])
    return (dict(arch=kd["teacher"], method="kd_teacher", seed=TEACHER_SEED, epochs=s["epochs"],
                 build=dict(kd["teacher_build"]), est_s_per_epoch=TEACHER_EST_S_PER_EPOCH), run)


def plan_runs(s, workdir, options=None):
    """``[(row key, run)]``: the kd teacher first (when kd is planned), then seed by seed
    (a table stopped early has whole seeds)."""
    entries = [teacher_entry(s, workdir, options)] if "kd" in s["methods"] else []
    teacher = os.path.join(teacher_dir(s, workdir), "model.keras")
    for seed in s["seeds"]:
        for arch in s["archs"]:
            for method in s["methods"]:
                where = os.path.join(workdir, arch, method, f"seed-{seed}")
                entries.append((dict(arch=arch, method=method, seed=seed, epochs=s["epochs"]),
                                make_run(s, arch, method, seed, where, options,
                                         teacher=teacher if method == "kd" else None)))
    return entries


def _options():
    """The command line's run fields (precision is the study's: float32, fixed)."""
    return dict(data_dir=FLAGS.data_dir, strategy=FLAGS.strategy, overwrite=FLAGS.overwrite)


def main(argv):
    del argv
    s = settings()
    entries = plan_runs(s, FLAGS.workdir, _options())
    if FLAGS.dry_run:
        return report.print_plan(s, entries)
    if not FLAGS.report_only:  # runs recorded in the evidence are kept, not retrained
        recorded = byot_recorded.load(FLAGS.evidence, s)
        fashion_mnist_report.train_all(byot_recorded.still_to_train(
            entries, recorded, study.is_finished))
    print(report.write_report(s, entries, FLAGS.workdir, FLAGS.evidence, FLAGS.data_dir,
                              FLAGS.early_exit_repeats))


if __name__ == "__main__":
    app.run(common.guarded(main))
