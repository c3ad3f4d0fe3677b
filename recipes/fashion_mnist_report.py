"""Measure, tabulate, plot and ship the Fashion-MNIST study (``recipes/fashion_mnist.py``).

Why next to the recipe: these tables and plots are the demo's, not the
library's. Every trained model is measured the same way after training: its
predictions on the 10,000 test images (the recipes' eval protocol,
``resize_small(28)|central_crop(28)``, is the identity at 28 px) give top-1 and
agreement with the teacher's top-1; each run's result is cached in its work
directory (``measured.json``), so a rerun of a finished study prints at once.
"""

import json
import os
import time

import numpy as np

from kdzoo.train import study
from kdzoo.train.run_dir import model_file
from kdzoo.atomic import atomic_path, write_json
from kdzoo.evaluation import top1


def print_plan(s, entries):
    """--dry_run: the study's size and one run's plan, one JSON line."""
    from kdzoo.train import plan
    _, info = plan(entries[-2][1])
    steps = sum(plan(run)[0].total_steps for _, run in entries)
    print(json.dumps(dict(info, teacher=s["teacher"], student=s["student"], runs=len(entries),
                          study_steps=steps, budgets=list(s["budgets"]), seeds=list(s["seeds"]),
                          methods=list(s["methods"])), sort_keys=True))


def train_all(entries):
    """Train every run not yet finished, one after another, with a line per run; each run
    trained records its wall time in ``wall.json`` (:func:`_record_wall`)."""
    for i, (key, run) in enumerate(entries):
        start, start_step = time.perf_counter(), _checkpoint_step(run)
        if not study.run_one(run):  # finished with these settings (others are refused)
            continue
        seconds = time.perf_counter() - start
        _record_wall(run, seconds, start_step)
        print(f"[{i + 1}/{len(entries)}] {key['method']} {key['epochs']} epochs seed "
              f"{key['seed']}: {seconds:.0f} s", flush=True)


def _checkpoint_step(run):
    """The step a run resumes from (0: none yet), from its checkpoints' state.json."""
    from kdzoo.train import checkpointing
    path = os.path.join(run.workdir, "checkpoints", checkpointing.STATE_FILE)
    return json.load(open(path, encoding="utf-8")).get("step", 0) if os.path.exists(path) else 0


def _record_wall(run, seconds, start_step):
    """``wall.json``: this process's seconds over the steps it trained (setup, compile and
    the final test evaluation included: the cost of a run as a user pays it)."""
    steps = json.load(open(os.path.join(run.workdir, "metrics.json")))["total_steps"] - start_step
    write_json(os.path.join(run.workdir, "wall.json"), dict(
        seconds=seconds, steps=steps, start_step=start_step,
        seconds_per_step=seconds / steps if steps > 0 else None))


def _load(path):
    import keras

    import kdzoo  # noqa: F401  (registers kdzoo's layers and models)
    return keras.saving.load_model(path)


def _measure(run, images, labels, teacher_pred):
    """top-1 / agreement of one finished run (cached in its measured.json)."""
    cache = os.path.join(run.workdir, "measured.json")
    if os.path.exists(cache):
        return json.load(open(cache, encoding="utf-8"))
    model = _load(model_file(run.workdir))
    logits = model.predict(test_view(images, run.image_size), batch_size=1000, verbose=0)
    result = {}
    if isinstance(logits, (list, tuple)):  # self distillation: one output per exit
        result, logits = _exits(model, logits, labels), logits[-1]
    result.update(top1=top1(logits, labels), agreement=top1(logits, teacher_pred))
    write_json(cache, result)
    return result


def test_view(images, size):
    """The runs' evaluation view of the test images at ``size`` px: ``resize_small|central_crop``
    as the runner's (:func:`kdzoo.train.eval_batches`); the identity at their own 28 px."""
    if not size or size == images.shape[1]:
        return images
    import tensorflow as tf
    from kdzoo.data import get_spec
    from kdzoo.train import eval_batches, eval_resize_small
    examples = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images), np.int32)))
    batches = eval_batches(examples, size, 1000, eval_resize_small(get_spec("fashion_mnist"), size))
    return np.concatenate([x for x, _ in batches.as_numpy_iterator()])


def _exits(model, logits, labels):
    from kdzoo.distill.self_distill.early_exit import exit_flops
    flops = exit_flops(model)
    acc = [top1(z, labels) for z in logits]
    ensemble = top1(np.mean(np.stack(logits), 0), labels)
    return {"exit_top1": acc, "exit_mflops": [f / 1e6 for f in flops["to_exit"]],
            "full_mflops": flops["full"] / 1e6, "ensemble_top1": ensemble}


def _models_info(s, images, labels):
    """Teacher (with its test predictions) and student: name, top-1, MFLOPs, params."""
    import kdzoo
    from kdzoo.distill.self_distill.early_exit import count_flops
    teacher = kdzoo.load(s["teacher"])
    logits = teacher.predict(images, batch_size=1000, verbose=0)
    student = kdzoo.load(s["student"], weights=None)
    return logits.argmax(-1), {
        "teacher": {"name": s["teacher"], "top1": top1(logits, labels),
                    "mflops": count_flops(teacher) / 1e6, "params": teacher.count_params()},
        "student": {"name": s["student"], "mflops": count_flops(student) / 1e6,
                    "params": student.count_params()}}


def summarize_study(s, entries, workdir, evidence_path, data_dir=None):
    """Measure every finished run; write metrics.json (+ the evidence JSON) and two plots."""
    images, labels = _test_set(data_dir)
    teacher_pred, summary = _models_info(s, images, labels)
    rows = [dict(key, train_images=s["train_per_class"] * 10, workdir=run.workdir,
                 **_measure(run, images, labels, teacher_pred))
            for key, run in entries if study.is_finished(run)]
    summary.update(_study_record(s, rows, len(entries)))
    summary["files"] = [plot_budgets(summary, workdir), plot_exits(summary, workdir)]
    write_json(os.path.join(workdir, "metrics.json"), summary)
    if evidence_path:
        _write_evidence(summary, evidence_path)
        summary["files"].append(evidence_path)
    return summary


def _study_record(s, rows, planned):
    """The study's settings, rows, per-group summary, and whether every run finished."""
    return dict(study={k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
                rows=rows, summary=study.summarize(rows), planned_runs=planned,
                finished_runs=len(rows), complete=len(rows) == planned)


def _write_evidence(summary, path):
    """The committed evidence: the summary without machine-local paths."""
    public = dict(summary, files=None,
                  rows=[{k: v for k, v in r.items() if k != "workdir"} for r in summary["rows"]])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json(path, public)


def format_table(summary):
    """Test top-1 (mean ± std over seeds, min-max) and agreement, per method and budget."""
    t, st = summary["teacher"], summary["student"]
    lines = [f"teacher {t['name']}: {t['top1']:.2f}% test top-1, {t['mflops']:.1f} MFLOPs; "
             f"student {st['name']}: {st['mflops']:.1f} MFLOPs",
             "| method | epochs | seeds | test top-1 % (mean ± std) | min-max | agreement % |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {g['method']} | {g['epochs']} | {g['n']} | {g['top1_mean']:.2f} ± "
              f"{g['top1_std']:.2f} | {g['top1_min']:.2f}-{g['top1_max']:.2f} | "
              f"{g['agreement_mean']:.2f} |" for g in summary["summary"]]
    return "\n".join(lines + [_exit_line(r) for r in summary["rows"] if "exit_top1" in r])


def _exit_line(row):
    exits = " / ".join(f"{a:.2f}% @ {f:.2f} MFLOPs"
                       for a, f in zip(row["exit_top1"], row["exit_mflops"]))
    return (f"self distillation seed {row['seed']}: exits {exits}; "
            f"ensemble {row['ensemble_top1']:.2f}%")


def _save(fig, ax, path, title, xlabel, ylabel):
    import matplotlib.pyplot as plt
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


COLORS = {m: f"C{i}" for i, m in enumerate(
    ("labels", "mixup", "fix/rs", "ind/ic", "same/ic", "funmatch", "self_distillation"))}


def _color(method):
    """One colour per method in both plots (C7 for a method outside the study's list)."""
    return COLORS.get(method, "C7")


def _curve(ax, groups, method, color):
    g = sorted((x for x in groups if x["method"] == method), key=lambda x: x["epochs"])
    e = np.array([x["epochs"] for x in g])
    m, sd = np.array([x["top1_mean"] for x in g]), np.array([x["top1_std"] for x in g])
    ax.plot(e, m, "o-", color=color, label=method)
    ax.fill_between(e, m - sd, m + sd, color=color, alpha=0.2)


def plot_budgets(summary, workdir):
    """Test top-1 vs data epochs per method (log x), mean ± std band: the paper's Fig. 2/3."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    groups = [g for g in summary["summary"] if g["method"] != "self_distillation"]
    for method in dict.fromkeys(g["method"] for g in groups):
        _curve(ax, groups, method, _color(method))
    ax.axhline(summary["teacher"]["top1"], color="k", ls="--", label="teacher (60k images)")
    ax.set_xscale("log")
    n = summary["rows"][0]["train_images"] if summary["rows"] else 0
    return _save(fig, ax, os.path.join(workdir, "accuracy_vs_epochs.png"),
                 f"Fashion-MNIST, {n} training images: student test top-1",
                 "training epochs over the subset (log)", "test top-1 (%)")


def _exits_curve(ax, rows):
    sd = [r for r in rows if "exit_top1" in r]
    if sd:
        acc = np.array([r["exit_top1"] for r in sd])
        ax.errorbar(np.mean([r["exit_mflops"] for r in sd], 0), acc.mean(0), yerr=acc.std(0),
                    fmt="o-", capsize=3, color=_color("self_distillation"),
                    label=f"self distillation: exits 1..{acc.shape[1]}")


def plot_exits(summary, workdir):
    """Self distillation: test top-1 vs MFLOPs at each exit; teacher and students as points."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    _exits_curve(ax, summary["rows"])
    top = max((r["epochs"] for r in summary["rows"]), default=0)
    for g in (x for x in summary["summary"]
              if x["epochs"] == top and x["method"] != "self_distillation"):
        ax.scatter(summary["student"]["mflops"], g["top1_mean"], color=_color(g["method"]),
                   marker="x", label=f"{g['method']} ({top} epochs)")
    t = summary["teacher"]
    ax.scatter(t["mflops"], t["top1"], color="k", marker="*", s=80, label="teacher")
    return _save(fig, ax, os.path.join(workdir, "accuracy_vs_flops.png"),
                 "Accuracy vs compute per image", "MFLOPs per image", "test top-1 (%)")


def _test_set(data_dir=None):
    from kdzoo.data import fashion_mnist
    images, labels = fashion_mnist.load("test", data_dir)
    return images.astype("float32"), labels


def _evaluate_on_test(model):
    images, labels = _test_set()
    return top1(model.predict(images, batch_size=1000, verbose=0), labels)


def export_best(summary, entries, command):
    """Zoo cards for the best seed of each method at the largest budget."""
    top = max(r["epochs"] for r in summary["rows"])
    runs = {os.path.abspath(run.workdir): run for _, run in entries}
    for method in dict.fromkeys(r["method"] for r in summary["rows"]):
        best = max((r for r in summary["rows"] if r["method"] == method and r["epochs"] == top),
                   key=lambda r: r["top1"])
        card = _export_one(summary, runs[os.path.abspath(best["workdir"])], best, command)
        print(f"exported {card['name']}: test top-1 {card['top1']}%")


def _export_one(summary, run, row, command):
    from kdzoo.zoo.card_writer import export_card
    model = _load(model_file(run.workdir))
    tag = row["method"].replace("/", "_")
    return export_card(
        getattr(model, "backbone", model), f"{summary['student']['name']}.kdzoo_small_{tag}",
        dataset="fashion_mnist", stage=row["method"], produced_by=command,
        evaluate=_evaluate_on_test, extra=dict(seed=row["seed"], epochs=row["epochs"],
                                               train_images=row["train_images"],
                                               study="docs/fashion_mnist_study.md"))
