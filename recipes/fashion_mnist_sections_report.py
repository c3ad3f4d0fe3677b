"""Rows, plots and the evidence JSON of the Fashion-MNIST sections (issue 24).

Why apart from ``fashion_mnist_report.py``: that file reports the budget study; the
sections share its measurement (``_measure``: the test images at the run's own
evaluation view, top-1 and agreement with the study's teacher at its own 28 px, cached
in each run's ``measured.json``) but not its layout. Every named section gets one record
(its commit, command, machine, planned / finished / missing runs, mean ± std per arm and
budget) and its rows; sections not named keep what the file already holds, and the whole
file is replaced atomically. The top-level ``complete`` is false while any section of
issue 24 is unreported or has a run missing.
"""

import json
import os
import subprocess
import sys

import numpy as np

import fashion_mnist_report as report
from kdzoo.atomic import write_json
from kdzoo.evaluation import top1
from kdzoo.train import FunMatchRun, SupervisedRun, study

EVIDENCE = os.path.join(os.path.dirname(__file__), "..", "docs", "results",
                        "fashion_mnist_sections.json")
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8")


def _commit(here=None):
    """``git rev-parse HEAD`` of the tree these recipes run from (``+dirty`` if its code is
    edited; the evidence under ``docs/results``, which the runs themselves write, is not
    code and does not count)."""
    here = here or os.path.dirname(os.path.abspath(__file__))
    git = lambda *a: subprocess.run(("git", "-C", here) + a, capture_output=True,  # noqa: E731
                                    text=True).stdout.strip()
    head = git("rev-parse", "HEAD") or None
    return head and head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--",
                                                          ":(top)", ":(top,exclude)docs/results")
                            else "")


def machine():
    """The reporting machine: CPU model, core count, the SIMD flags that matter here."""
    from kdzoo.train.precision import read_cpu_flags
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         None)
    except OSError:  # not Linux
        model = None
    flags = read_cpu_flags()
    return dict(cpu=model, cores=os.cpu_count(), cpu_flags=[f for f in SIMD_FLAGS if f in flags])


def _record_of(run, name):
    path = os.path.join(run.workdir, name)
    return json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}


def student_flops(run):
    """FLOPs per image of the run's student, at its own resolution (its builder, no data)."""
    from kdzoo.distill.self_distill.early_exit import count_flops
    return count_flops((run.student if hasattr(run, "student") else run.model)())


def _row(key, run, measured, flops):
    from kdzoo.train import plan
    wall = _record_of(run, "wall.json")
    return dict(section=key["section"], arm=key["arm"], seed=key["seed"], epochs=key["epochs"],
                train_images=plan(run)[1]["train_examples"], student_flops=flops,
                total_steps=_record_of(run, "metrics.json").get("total_steps"),
                precision=_record_of(run, "config.json").get("precision"),
                wall_s_per_step=wall.get("seconds_per_step"), **measured)


def measure_rows(entries, images, labels, teacher_pred):
    """``(rows of the finished runs, keys of the others)``; FLOPs counted once per arm."""
    rows, missing, flops = [], [], {}
    for key, run in entries:
        if not study.is_finished(run):
            missing.append({k: key[k] for k in ("arm", "epochs", "seed")})
            continue
        arm = (key["section"], key["arm"])
        flops.setdefault(arm, student_flops(run))
        rows.append(_row(key, run, report._measure(run, images, labels, teacher_pred),
                         flops[arm]))
    return rows, missing


def section_record(cfg, rows, missing, command):
    """One section's record: how and where it was reported, what is missing, the summary."""
    return dict(title=cfg["title"], config={k: (list(v) if isinstance(v, tuple) else v)
                                            for k, v in cfg.items()},
                commit=_commit(), command=command, machine=machine(),
                planned_runs=len(rows) + len(missing), finished_runs=len(rows),
                complete=not missing, incomplete=missing,
                summary=study.summarize(rows, by=("arm", "epochs")))


def merge(old, records, rows, teacher, all_sections):
    """The new file: ``old`` with the named sections' records and rows replaced."""
    sections = dict(old.get("sections", {}), **records)
    kept = [r for r in old.get("rows", []) if r["section"] not in records]
    unreported = [s for s in all_sections if s not in sections]
    return dict(teacher=teacher, sections=dict(sorted(sections.items())),
                unreported_sections=unreported, rows=kept + rows,
                complete=not unreported and all(r["complete"] for r in sections.values()))


def _merge_into(path, records, rows, teacher, all_sections):
    """Read, merge and atomically replace ``path`` under a lock beside it (``.<name>.lock``):
    reports of different sections finishing together each keep the other's update."""
    from kdzoo.file_lock import FileLock
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    lock = os.path.join(folder, f".{os.path.basename(path)}.lock")
    with FileLock(lock, what=f"The sections evidence {path}", blocking=True):
        merged = merge(_load(path), records, rows, teacher, all_sections)
        write_json(path, merged)
    return merged


def _load(path):
    return json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}


def teachers_record(cfg, images, labels):
    """A section's own teachers (3.6a), measured here: each one's test top-1 and that of
    their ensemble (argmax of the mean of their softmax probabilities at T = 1, the
    distillation's T). ``None`` for a teacher the zoo does not ship yet."""
    from kdzoo.zoo import registry
    out, probs = {}, []
    for key, name in cfg["teachers"].items():
        p = _probs(name, images) if name in registry.cards() else None
        out[key] = dict(name=name, top1=None if p is None else top1(p, labels))
        probs += [] if p is None else [p]
    out["ensemble_top1"] = (top1(np.mean(probs, 0), labels)
                            if len(probs) == len(cfg["teachers"]) else None)
    return out


def _probs(name, images):
    import kdzoo
    logits = kdzoo.load(name).predict(images, batch_size=1000, verbose=0)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def report_sections(s, entries, configs, all_sections, evidence=EVIDENCE, data_dir=None,
                    extras=None):
    """The named sections' finished runs measured: the JSON (merged), a plot each; ``extras``
    (``{section: {key: value}}``, 3.5's pretraining) and 3.6a's teachers join its record."""
    (images, labels), records, rows = report._test_set(data_dir), {}, []
    teacher_pred, info = report._models_info(s, images, labels)
    command = " ".join(["python recipes/fashion_mnist.py"] + sys.argv[1:])
    for name, cfg in configs.items():
        got, missing = measure_rows([e for e in entries if e[0]["section"] == name],
                                    images, labels, teacher_pred)
        records[name], rows = section_record(cfg, got, missing, command), rows + got
        records[name].update((extras or {}).get(name, {}), **(
            {"teachers": teachers_record(cfg, images, labels)} if "teachers" in cfg else {}))
    merged = _merge_into(evidence, records, rows, info["teacher"], all_sections)
    return merged, [plot_section(merged, n, os.path.dirname(evidence)) for n in configs]


def _bars(ax, groups, arms):
    m = [np.mean([g["top1_mean"] for g in groups if g["arm"] == a]) for a in arms]
    sd = [np.mean([g["top1_std"] for g in groups if g["arm"] == a]) for a in arms]
    ax.bar(range(len(arms)), m, yerr=sd, capsize=4, color=[f"C{i}" for i in range(len(arms))])
    ax.set_xticks(range(len(arms)), arms, rotation=15, fontsize=8)
    ax.set_ylim(max(0.0, min(m) - 10), 100)


def _curves(ax, groups, arms):
    for i, arm in enumerate(arms):
        g = sorted((x for x in groups if x["arm"] == arm), key=lambda x: x["epochs"])
        e, m = np.array([x["epochs"] for x in g]), np.array([x["top1_mean"] for x in g])
        sd = np.array([x["top1_std"] for x in g])
        ax.plot(e, m, "o-", color=f"C{i}", label=arm)
        ax.fill_between(e, m - sd, m + sd, color=f"C{i}", alpha=0.2)
    ax.set_xscale("log")


def plot_section(evidence, name, directory):
    """``fashion_mnist_section_<name>.png``: test top-1 mean ± std over seeds per arm (bars
    for one budget, curves over budgets for several), the teacher as a dashed line."""
    plt, rec = report._pyplot(), evidence["sections"][name]
    fig, ax = plt.subplots(figsize=(7, 5))
    groups, arms = rec["summary"], list(rec["config"]["arms"])
    arms = [a for a in arms if any(g["arm"] == a for g in groups)]
    (_curves if len(rec["config"]["epochs"]) > 1 else _bars)(ax, groups, arms)
    ax.axhline(evidence["teacher"]["top1"], color="k", ls="--", label="teacher (60k images)")
    n = f"{rec['finished_runs']}/{rec['planned_runs']} runs"
    return report._save(fig, ax, os.path.join(directory, f"fashion_mnist_section_{name}.png"),
                        f"Section {name}, {rec['title']} ({n}): student test top-1",
                        "training epochs (log)" if len(rec["config"]["epochs"]) > 1 else "arm",
                        "test top-1 % (mean ± std over seeds)")


def report_and_print(s, entries, names, evidence=None, data_dir=None, extras=None):
    """What ``--sections`` prints after training: the table and the files written."""
    import fashion_mnist_sections as sections
    merged, files = report_sections(s, entries, {n: sections.SECTIONS[n] for n in names},
                                    sections.ALL, evidence or EVIDENCE, data_dir, extras)
    print(format_table(merged, names))
    print("\n".join(f"wrote {path}" for path in [evidence or EVIDENCE] + files))


def format_table(evidence, names):
    """Per named section: arm, epochs, seeds, top-1 and agreement (mean ± std), MFLOPs, s/step."""
    lines = []
    for name in names:
        rec = evidence["sections"][name]
        flops = {r["arm"]: r["student_flops"] for r in evidence["rows"] if r["section"] == name}
        wall = _wall_by_group(evidence["rows"], name)
        lines += [f"section {name} ({rec['title']}): {rec['finished_runs']}/"
                  f"{rec['planned_runs']} runs" + ("" if rec["complete"] else ", INCOMPLETE"),
                  "| arm | epochs | seeds | test top-1 % | agreement % | MFLOPs | s/step |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_table_line(g, flops, wall) for g in rec["summary"]]
    return "\n".join(lines)


def _wall_by_group(rows, name):
    out = {}
    for r in rows:
        if r["section"] == name and r.get("wall_s_per_step") is not None:
            out.setdefault((r["arm"], r["epochs"]), []).append(r["wall_s_per_step"])
    return {k: float(np.mean(v)) for k, v in out.items()}


def _table_line(g, flops, wall):
    w = wall.get((g["arm"], g["epochs"]))
    return (f"| {g['arm']} | {g['epochs']} | {g['n']} | {g['top1_mean']:.2f} ± "
            f"{g['top1_std']:.2f} | {g['agreement_mean']:.2f} ± {g['agreement_std']:.2f} | "
            f"{flops[g['arm']] / 1e6:.2f} | {'-' if w is None else f'{w:.4f}'} |")


# For --dry_run's estimate: whole-run seconds per step on the 2 shared vCPUs the sections
# ran on (float32, oneDNN): funmatch at 28 px 0.065 (3.4 / 3.8's Adam rows at 300 epochs),
# labels 0.04 (3.3's at 20 px, rounded up); an ensemble adds one teacher forward per step
# (not yet measured: 1.5x); plus set-up, compilation and evaluation per run. Keyed by the
# run-options class itself, looked up along the run's MRO, so a subclass (of either) gets
# its base's rate rather than a KeyError.
S_PER_STEP = {FunMatchRun: 0.07, SupervisedRun: 0.04}
ENSEMBLE_FACTOR, S_PER_RUN = 1.5, 30


def _s_per_step(run):
    """The rate of the nearest class of ``run`` (along ``type(run).__mro__``) in S_PER_STEP."""
    for cls in type(run).__mro__:
        if cls in S_PER_STEP:
            return S_PER_STEP[cls]
    raise KeyError(f"No seconds-per-step estimate for a {type(run).__name__}: add its class "
                   "(or a base of it) to S_PER_STEP.")


def estimate_s(run):
    """Estimated CPU seconds of one run (see :data:`S_PER_STEP`)."""
    from kdzoo.train import plan
    rate = _s_per_step(run)
    if "teacher_ensemble" in repr(getattr(run, "teacher", "")):
        rate *= ENSEMBLE_FACTOR
    return S_PER_RUN + rate * plan(run)[0].total_steps


def print_plan(entries, before=None, missing_teachers=()):
    """--dry_run: one JSON line per section (runs, steps, arms, budgets, seeds, estimated
    hours, one run's plan), the runs it trains first (3.5's pretraining), missing teachers."""
    for name in dict.fromkeys(k["section"] for k, _ in entries):
        print(json.dumps(_plan_line(name, [(k, r) for k, r in entries if k["section"] == name],
                                    (before or {}).get(name)), sort_keys=True))
    for line in missing_teachers:
        print(f"missing teacher (train it before these runs): {line}")


def _plan_line(name, mine, first):
    from kdzoo.train import plan
    extra = {} if first is None else dict(trains_first=dict(
        plan(first)[1], workdir=first.workdir, estimated_hours=round(estimate_s(first) / 3600, 2)))
    hours = (sum(estimate_s(r) for _, r in mine) + (first and estimate_s(first) or 0)) / 3600
    return dict(plan(mine[-1][1])[1], section=name, runs=len(mine),
                section_steps=sum(plan(r)[0].total_steps for _, r in mine),
                arms=list(dict.fromkeys(k["arm"] for k, _ in mine)),
                epochs=sorted({k["epochs"] for k, _ in mine}),
                seeds=sorted({k["seed"] for k, _ in mine}), estimated_hours=round(hours, 2),
                **extra)
