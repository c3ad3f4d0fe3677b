"""Measure, tabulate and plot the BYOT table (``recipes/byot_fashion_mnist.py``).

Why next to the recipe: the table and its plots are this study's, not the
library's. Every figure comes from what a finished run left in its work
directory: ``exit_accuracy.json`` (:mod:`kdzoo.distill.self_distill.exit_reporting`),
per Keras epoch (one data epoch here) the test top-1 of every exit and the
ensemble, the minival top-1 that picks the best epoch, and the seconds of
training (``train_s``, no evaluation). FLOPs are counted on the architecture
(:mod:`kdzoo.distill.self_distill.early_exit`), not measured. Nothing is selected
on the test set. The five claims of issue 28 are judged from the rows
(``byot_claims.py``); claim 5 reloads each finished SD network, calibrates early exit
on minival and measures it on the test images (``byot_early_exit.py``).

Rows of the evidence JSON, one per (arch, method, seed, exit): ``exit`` is
``1..N`` (the top-1 of that exit; ``flops`` the cost of running up to it) or
``"ensemble"`` (the mean of the exits' logits; every head's cost) for the
exits' methods, ``"output"`` for one-output networks (baseline, kd, and the kd
teacher, ``method="kd_teacher"``: in the rows and summary, not in the table).
"""

import json
import os
import platform
import subprocess
import sys

import numpy as np

from kdzoo.atomic import atomic_path, write_json
from kdzoo.distill.self_distill.exit_reporting import REPORT_NAME
from kdzoo.train import study

EVIDENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "results",
                        "byot_fashion_mnist.json")
ROW_KEYS = ("arch", "method", "seed", "exit", "top1_last", "top1_best", "flops",
            "train_s_per_epoch")


def print_plan(s, entries):
    """--dry_run: the table's size, one run's plan, what is planned but not runnable, and the
    kd teacher's run (trained first, then read by every kd run)."""
    from kdzoo.train import plan
    runnable = [run for _, run in entries if run is not None]
    info = plan(runnable[0])[1] if runnable else {}
    print(json.dumps(dict(
        info, runs=len(entries), runnable_runs=len(runnable), kd_teacher=kd_teachers(entries),
        runs_by_method={m: sum(k["method"] == m for k, _ in entries)
                        for m in dict.fromkeys(k["method"] for k, _ in entries)},
        not_runnable=sorted({k["method"] for k, r in entries if r is None}),
        study_steps=sum(plan(r)[0].total_steps for r in runnable), archs=s["archs"],
        methods=list(s["methods"]), seeds=list(s["seeds"]), version=s["version"],
        estimated_hours=round(estimate_seconds(s, entries) / 3600, 2)), sort_keys=True))


def kd_teachers(entries):
    """The kd teacher runs of a plan: where, in which order, and how many kd runs read them."""
    return [dict(arch=k["arch"], build=k["build"], seed=k["seed"], workdir=r.workdir, order=i,
                 kd_runs=sum(getattr(x, "teacher", None) == os.path.join(r.workdir, "model.keras")
                             for _, x in entries))
            for i, (k, r) in enumerate(entries) if k["method"] == "kd_teacher"]


def estimate_seconds(s, entries):
    """Wall time of the planned runs from the sizing runs' seconds per epoch (train + eval);
    a run not sized (the kd teacher) carries its own estimate, ``est_s_per_epoch``."""
    return sum((k.get("est_s_per_epoch") or s["sizing_s_per_epoch"][k["arch"]][k["method"]])
               * k["epochs"] + s["sizing_s_per_run"] for k, _ in entries)


def _per_data_epoch(per_epoch, batch_size, n_train):
    """Median training seconds per pass over the ``n_train`` images (tracing epochs are
    outliers; a resumed run's epochs count alike)."""
    rates, step = [], 0
    for h in per_epoch:
        if h.get("train_s") is not None and h["step"] > step:
            rates.append(h["train_s"] / ((h["step"] - step) * batch_size / n_train))
        step = h["step"]
    return float(np.median(rates)) if rates else None


def flops_of(run, version):
    """``{exit: FLOPs}`` of a run's network: cumulative per exit and the whole ensemble, or
    ``{"output": FLOPs}`` of a one-output network."""
    from kdzoo.distill.self_distill import SelfDistillation
    from kdzoo.distill.self_distill.early_exit import count_flops, exit_flops
    net = run.model()
    if run.method in ("labels", "knowledge_distillation"):  # one output (kd: the student's)
        return {"output": int(count_flops(net))}
    sd = SelfDistillation(net, num_classes=10, version=version, mode=run.method)
    f = exit_flops(sd)
    return {**{str(i): int(v) for i, v in enumerate(f["to_exit"], 1)},
            "ensemble": int(count_flops(sd.network))}


def measure(key, run, flops, n_train):
    """The rows of one finished run (top-1 in %, from its exit_accuracy.json)."""
    with open(os.path.join(run.workdir, REPORT_NAME), encoding="utf-8") as f:
        rep = json.load(f)
    last, best = rep["last_epoch"]["test"], rep["best_epoch"]["test"]
    speed = _per_data_epoch(rep["per_epoch"], run.batch_size, n_train)
    rows = []
    for name in flops:
        src = "ensemble" if name in ("ensemble", "output") else f"exit{name}"
        rows.append(dict(arch=key["arch"], method=key["method"], seed=key["seed"],
                         exit=int(name) if name.isdigit() else name,
                         top1_last=100 * last[src], top1_best=100 * best[src],
                         flops=flops[name], train_s_per_epoch=speed,
                         best_epoch=rep["best_epoch"]["epoch"], epochs=key["epochs"]))
    return rows


def collect(s, entries, recorded=None):
    """``(rows, runs with provenance)``: measured in the workdir, else kept from ``recorded``."""
    import byot_recorded
    rows, runs, cache, here = [], [], {}, None
    for key, run in entries:
        kept = (recorded or {}).get(byot_recorded.run_key(key))
        if run is not None and study.is_finished(run):
            rows += _measured(s, key, run, cache)
            here = here or machine(s)  # one git call per report, not one per run
            runs.append(dict(arch=key["arch"], method=key["method"], seed=key["seed"],
                             source="workdir", **here))
        elif kept is not None:
            rows += kept["rows"]
            runs.append(dict(kept["provenance"], source="evidence"))
    return rows, runs


def _measured(s, key, run, cache):
    """The rows of a run finished in its work directory (FLOPs counted once per network)."""
    where = (key["arch"], key["method"])
    if where not in cache:
        cache[where] = flops_of(run, s["version"])
    return measure(key, run, cache[where], 10 * s["train_per_class"])


def machine(s):
    """Commit, command, CPU and precision of the report (the runs' own are in config.json)."""
    from kdzoo.train.precision import read_cpu_flags, resolve_precision
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return dict(commit=commit, command=" ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
                cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                cpu_flags=sorted(set(read_cpu_flags()) & {
                    "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16",
                    "amx_tile"}), precision=resolve_precision(s["mixed_precision"]))


def summarize(rows):
    """mean / std (population, over seeds) of top-1 last / best per (arch, method, exit)."""
    return study.summarize(rows, by=("arch", "method", "exit"),
                           values=("top1_last", "top1_best", "flops"))


def write_report(s, entries, workdir, evidence_path, data_dir=None, early_exit_repeats=3):
    """Rows, summary, machine, completeness, the claims' verdicts -> evidence JSON; plots;
    returns the tables and the verdicts as text."""
    import byot_claims
    record = _record(s, entries, evidence_path, data_dir, early_exit_repeats)
    record["plots"] = [plot_arch(record, arch, os.path.dirname(os.path.abspath(evidence_path)))
                       for arch in s["archs"] if any(r["arch"] == arch for r in record["rows"])]
    os.makedirs(os.path.dirname(os.path.abspath(evidence_path)), exist_ok=True)
    write_json(evidence_path, json.loads(json.dumps(record, default=list)))
    return "\n\n".join([format_table(record, which) for which in ("top1_best", "top1_last")]
                       + [byot_claims.format_claims(record["claims"])])


def _record(s, entries, evidence_path, data_dir, early_exit_repeats):
    """The evidence record: this report's machine, the rows of the runs finished here and
    of those kept from the evidence at ``evidence_path``, summary, claim 5, verdicts."""
    import byot_claims
    import byot_recorded
    recorded = byot_recorded.load(evidence_path, s)
    rows, runs = collect(s, entries, recorded)
    record = dict(machine(s), study={k: v for k, v in s.items()}, rows=rows, runs=runs,
                  summary=summarize(rows), planned_runs=len(entries), finished_runs=len(runs),
                  complete=len(runs) == len(entries), row_keys=list(ROW_KEYS),
                  early_exit=early_exit_of(s, entries, data_dir, early_exit_repeats, recorded))
    record["claims"] = byot_claims.judge(rows, list(s["archs"]), record["early_exit"],
                                         planned=len(entries), finished=len(runs))
    return record


def early_exit_of(s, entries, data_dir, early_exit_repeats, recorded):
    """Claim 5's measurements (byot_early_exit.py: calibrated on minival, then measured on
    the test images) of every SD run finished here, and the recorded ones of SD runs kept
    from the evidence (each with ``source``; kept even when this report measures none, so
    a report with ``--early_exit_repeats 0`` loses nothing)."""
    import byot_early_exit
    import byot_recorded
    early = byot_early_exit.measure_all(s, entries, data_dir, early_exit_repeats)
    here = {(r["arch"], r["seed"]) for r in early.get("runs", [])}  # skipped: none here
    early["runs"] = [dict(r, source="workdir") for r in early.get("runs", [])] + [
        dict(kept["early_exit"], source="evidence") for k, _ in entries
        if k["method"] == "self_distillation" and (k["arch"], k["seed"]) not in here
        and (kept := recorded.get(byot_recorded.run_key(k))) and kept["early_exit"]]
    return early


def _cell(groups, arch, method, exit_):
    g = groups.get((arch, method, exit_))
    return "—" if g is None else f"{g['mean']:.2f} ± {g['std']:.2f}"


def _groups(record, which):
    return {(g["arch"], g["method"], g["exit"]): dict(mean=g[f"{which}_mean"],
                                                      std=g[f"{which}_std"])
            for g in record["summary"]}


def _line(groups, arch, method, n_exits):
    """One table row: the arch's baseline, then ``method``'s exits and ensemble (kd: output)."""
    exits = [_cell(groups, arch, method, i) for i in range(1, n_exits + 1)]
    last = "output" if method == "kd" else "ensemble"
    cells = [arch, method, _cell(groups, arch, "baseline", "output"), *exits,
             _cell(groups, arch, method, last)]
    return "| " + " | ".join(cells) + " |"


def format_table(record, which="top1_best"):
    """The seed table's layout: Baseline | exit 1/N .. N/N | ensemble, mean ± std over seeds
    (a network with fewer exits leaves its last columns "—")."""
    groups = _groups(record, which)
    n_exits = max([e for (_, _, e) in groups if isinstance(e, int)] or [4])
    head = ["arch", "method", "Baseline", *[f"exit {i}/{n_exits}" for i in
                                            range(1, n_exits + 1)], "ensemble"]
    title = {"top1_best": "best epoch (chosen on minival)", "top1_last": "last epoch"}[which]
    lines = [f"{title}: test top-1 %, mean ± std over seeds", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    return "\n".join(lines + [_line(groups, arch, method, n_exits)
                              for arch in record["study"]["archs"]
                              for method in record["study"]["methods"] if method != "baseline"])


def _draw(ax, groups, method, color):
    """One method: its exits as a curve (exit k at the FLOPs up to k), single outputs and the
    ensemble as points; best-epoch test top-1, mean ± std."""
    curve = sorted((g for g in groups if isinstance(g["exit"], int)), key=lambda g: g["exit"])
    if curve:
        ax.errorbar([g["flops_mean"] / 1e6 for g in curve], [g["top1_best_mean"] for g in curve],
                    yerr=[g["top1_best_std"] for g in curve], fmt="o-", capsize=3, color=color,
                    label=f"{method}: exits 1..{len(curve)}")
    for g in (g for g in groups if isinstance(g["exit"], str)):
        ax.errorbar(g["flops_mean"] / 1e6, g["top1_best_mean"], yerr=g["top1_best_std"],
                    fmt="*" if g["exit"] == "ensemble" else "s", color=color, capsize=3,
                    ms=9, label=f"{method} ({g['exit']})")


def plot_arch(record, arch, folder):
    """Accuracy vs FLOPs of one architecture, every method: ``folder/byot_<arch>.png``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, method in enumerate(record["study"]["methods"]):
        _draw(ax, [g for g in record["summary"] if (g["arch"], g["method"]) == (arch, method)],
              method, f"C{i}")
    ax.set(xlabel="MFLOPs per image (up to the exit)", ylabel="test top-1 % (best epoch)",
           title=f"BYOT on Fashion-MNIST at 32 px: {arch}")
    return _save(plt, fig, ax, os.path.join(folder, f"byot_{arch}.png"))


def _save(plt, fig, ax, path):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return os.path.basename(path)
