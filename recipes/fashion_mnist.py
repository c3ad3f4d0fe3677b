"""The main job: the FunMatch paper's small-data regime on real Fashion-MNIST, offline.

A strong teacher from the zoo (``fmnist_cnn_w32.kdzoo_teacher_full``: trained
on all 60,000 images by ``recipes/fashion_mnist_teacher.py``) teaches the 4x
smaller ``fmnist_cnn_w16`` on only 1,000 training images (100 per class, drawn
once with seed 0 from the 55,000-image train split; every method and seed sees
the same 1,000). Six methods, same student, same images, same optimizer and
budget: labels only, mixup fine-tune on labels, fix/rs, ind/ic, same/ic,
funmatch; each budget (data epochs over the 1,000 images) is a separate run, as
in the paper's figures. Plus self distillation of the student on the same
images. Everything is scored on the 10,000 test images (top-1 and agreement with
the teacher). The settings below were fixed before any run.

    python recipes/fashion_mnist.py                        # the demo: 2 budgets, 1 seed
    python recipes/fashion_mnist.py --long --workdir /tmp/fm_long   # the study (~1.5 h)

Interrupt and rerun at any time: finished runs are skipped, the running one resumes.
"""

import functools
import os
import sys

from absl import app, flags

import common
import fashion_mnist_report as report

common.define_common_flags("runs/fashion_mnist")
flags.DEFINE_bool("long", False, "The whole study: 4 budgets x 3 seeds, evidence JSON + plots.")
flags.DEFINE_string("budgets", None, "Comma-separated data-epoch budgets (default: the study's; "
                    "with --sections: train only these of the sections' budgets).")
flags.DEFINE_string("seeds", None, "Comma-separated training seeds (default: the study's; "
                    "with --sections: train only these of the sections' seeds).")
flags.DEFINE_string("methods", None, "Comma-separated subset of the methods (default: all).")
flags.DEFINE_integer("train_per_class", None, "Training images per class (default 100).")
flags.DEFINE_string("teacher", None, "Zoo name of the teacher (default: the study's).")
flags.DEFINE_string("evidence", None, "Also write the evidence JSON here (--long default: "
                    "docs/results/fashion_mnist_small_data.json).")
flags.DEFINE_bool("report_only", False, "Train nothing: measure and report the finished "
                  "runs (a study stopped early).")
flags.DEFINE_bool("export_pretrained", False, "Ship the best student of each method at the "
                  "largest budget in the zoo (weights + cards).")
flags.DEFINE_bool("sections", False, "The paper's sections (issue 24) instead of the budget "
                  "study; see recipes/fashion_mnist_sections.py.")
flags.DEFINE_string("section", "3.3", "With --sections: comma-separated sections to run.")
flags.adopt_module_key_flags(common)
FLAGS = flags.FLAGS

STUDY = dict(  # fixed before any run; see docs/fashion_mnist_study.md
    teacher="fmnist_cnn_w32.kdzoo_teacher_full", student="fmnist_cnn_w16",
    train_per_class=100, subset_seed=0, batch_size=128, lr=3e-3, weight_decay=1e-4,
    warmup_fraction=0.05, temperature=1.0, inception_area_range=(0.25, 1.0),
    methods=("labels", "mixup", "fix/rs", "ind/ic", "same/ic", "funmatch"),
    budgets={"long": (10, 30, 100, 300), "demo": (10, 100)},
    seeds={"long": (0, 1, 2), "demo": (0,)})
EVIDENCE = os.path.join(os.path.dirname(__file__), "..", "docs", "results",
                        "fashion_mnist_small_data.json")


def _ints(text, default):
    return tuple(int(v) for v in text.split(",")) if text else default


def settings():
    """The study as run now: STUDY with the command line's overrides."""
    kind = "long" if FLAGS.long else "demo"
    methods = tuple(FLAGS.methods.split(",")) if FLAGS.methods else STUDY["methods"]
    unknown = sorted(set(methods) - set(STUDY["methods"]))
    if unknown:
        common.fail(f"--methods: unknown {unknown}; choose from {', '.join(STUDY['methods'])}.")
    return dict(STUDY, kind=kind, methods=methods, teacher=FLAGS.teacher or STUDY["teacher"],
                budgets=_ints(FLAGS.budgets, STUDY["budgets"][kind]),
                seeds=_ints(FLAGS.seeds, STUDY["seeds"][kind]),
                train_per_class=FLAGS.train_per_class or STUDY["train_per_class"],
                batch_size=FLAGS.batch_size or STUDY["batch_size"])  # what the runs use


def _optimizer(s):
    from kdzoo.distill import paper_optimizer
    return lambda total: paper_optimizer(s["lr"], total, round(s["warmup_fraction"] * total),
                                         s["weight_decay"])


def _shared(s, epochs, seed, workdir):
    """The fields every run of the study shares."""
    return dict(dataset="fashion_mnist", workdir=workdir, epochs=epochs, seed=seed,
                batch_size=s["batch_size"], data_dir=FLAGS.data_dir,
                train_per_class=s["train_per_class"], subset_seed=s["subset_seed"],
                strategy=FLAGS.strategy, verbose=0, overwrite=FLAGS.overwrite,
                eval_roles=("test",),  # nothing is selected on minival here
                **dict(common.run_flags(False), checkpoint_every_minutes=10.0))


def method_run(s, method, epochs, seed, workdir):
    """The run of one (method, budget, seed) point, in its own work directory."""
    from kdzoo import load
    from kdzoo.train import FunMatchRun, SupervisedRun, total_steps
    student, shared = functools.partial(load, s["student"], weights=None), _shared(s, epochs, seed, workdir)  # noqa: E501
    if method in ("labels", "mixup"):
        return SupervisedRun(model=student, optimizer=_optimizer(s), crop="inception",
                             inception_area_range=s["inception_area_range"],
                             mixup_alpha=1.0 if method == "mixup" else None, **shared)
    warmup = round(s["warmup_fraction"] * total_steps(epochs, 10 * s["train_per_class"], shared["batch_size"]))  # noqa: E501
    return FunMatchRun(teacher=functools.partial(load, s["teacher"]), student=student,
                       variant=method, temperature=s["temperature"], lr=s["lr"],
                       weight_decay=s["weight_decay"], image_size=28, warmup_steps=warmup,
                       distiller_kwargs=dict(inception_area_range=s["inception_area_range"]),
                       **shared)


def self_distill_run(s, epochs, seed, workdir):
    """Self distillation of the student (exits after each section) on the same images."""
    import dataclasses
    return dataclasses.replace(method_run(s, "labels", epochs, seed, workdir),
                               method="self_distillation")


def _points(s):
    """Every (method, budget, seed) of the study, self distillation at the largest budget."""
    for seed in s["seeds"]:
        for method in s["methods"]:
            for epochs in s["budgets"]:
                yield dict(method=method, epochs=epochs, seed=seed)
        yield dict(method="self_distillation", epochs=max(s["budgets"]), seed=seed)


def plan_runs(s, workdir):
    """``[(row key, run)]`` in the order they run: the first seed's whole sweep, the other
    seeds' smaller budgets, then their largest (a study stopped early has whole curves)."""
    entries = []
    for p in _points(s):
        where = os.path.join(workdir, p["method"].replace("/", "_"), f"e{p['epochs']}",
                             f"seed-{p['seed']}")
        make = self_distill_run if p["method"] == "self_distillation" else \
            functools.partial(method_run, method=p["method"])
        entries.append((p, make(s, epochs=p["epochs"], seed=p["seed"], workdir=where)))
    last, first = max(s["budgets"]), s["seeds"][0]
    return sorted(entries, key=lambda e: (e[0]["seed"] != first and e[0]["epochs"] == last,
                                          s["seeds"].index(e[0]["seed"])))


def sections_main(s):
    """--sections: plan (--dry_run), train (unless --report_only), report (--evidence, plots)."""
    import fashion_mnist_sections as sections
    import fashion_mnist_sections_report as sreport
    names = FLAGS.section.split(",")
    try:
        entries = sections.plan_sections(s, names, FLAGS.workdir, method_run)
    except ValueError as e:
        common.fail(str(e))
    before, missing = sections.prerequisites(s, names, FLAGS.workdir, method_run), \
        sections.missing_teachers(names)
    if FLAGS.dry_run:
        return sreport.print_plan(_share(entries), before, missing)
    extras = _train_sections(entries, before, missing)
    sreport.report_and_print(s, entries, names, FLAGS.evidence, FLAGS.data_dir, extras)


def _share(entries):
    """The runs this process trains: ``--seeds`` / ``--budgets`` of them (default all).
    Processes can share a section: each reports every finished run, the others' too."""
    seeds, budgets = _ints(FLAGS.seeds, None), _ints(FLAGS.budgets, None)
    return [(k, r) for k, r in entries if (not seeds or k["seed"] in seeds)
            and (not budgets or k["epochs"] in budgets)]


def _train_sections(entries, before, missing):
    """Train the prerequisites (3.5's pretraining) then this process's share (unless
    --report_only); ``{section: {"pretraining": record}}`` for the report."""
    import fashion_mnist_pretrain as pretrain
    if missing and not FLAGS.report_only:
        common.fail("--section: the zoo lacks a teacher these runs need; train it once "
                    "first:\n  " + "\n  ".join(missing))
    command = " ".join(["python recipes/fashion_mnist.py"] + sys.argv[1:])
    extras = {name: {"pretraining": (pretrain.read_record(run.workdir) if FLAGS.report_only
                                     else pretrain.ensure_pretrained(run, command,
                                                                     FLAGS.data_dir)) or None}
              for name, run in before.items()}
    if not FLAGS.report_only:
        report.train_all(_share(entries))
    return extras


def main(argv):
    del argv
    s = settings()
    if FLAGS.sections:
        return sections_main(s)
    entries = plan_runs(s, FLAGS.workdir)
    if FLAGS.dry_run:
        return report.print_plan(s, entries)
    if not FLAGS.report_only:
        report.train_all(entries)
    report_study(s, entries)


def report_study(s, entries):
    """Measure the finished runs: the table, the plots, the evidence JSON, the zoo export."""
    evidence = FLAGS.evidence or (EVIDENCE if FLAGS.long else None)
    summary = report.summarize_study(s, entries, FLAGS.workdir, evidence, FLAGS.data_dir)
    print(report.format_table(summary))
    for path in summary["files"]:
        print(f"wrote {path}")
    if FLAGS.export_pretrained:
        report.export_best(summary, entries, "python recipes/fashion_mnist.py --long")


if __name__ == "__main__":
    app.run(common.guarded(main))
