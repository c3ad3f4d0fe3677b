"""Verdicts on issue 28's five BYOT claims, computed from the table's rows (byot_report.py).

Why a separate file: the table says what was measured, this file says what it means
for the paper's claims, by rules fixed here before the numbers are read (nothing is
tuned). Accuracy is ``top1_best`` (test top-1 at the epoch chosen on the 5,000 minival
images, never on the test set), in %, mean and population std over the seeds that
finished; ``top1_last`` is shown beside it. A claim whose method or arch has no finished
run is "not measured (why)"; an incomplete table is named in every claim's numbers.

Rules (docs/self_distillation.md, "How the claims are judged"):
1. per arch, mean deepest SD exit > mean baseline; reproduced when it holds for every arch.
2. the SD gain of claim 1 rises strictly with depth (the number in the arch's name,
   the paper's convention) over >= 2 depths.
3. per arch and exit k, mean SD exit k > mean deep-supervision exit k, for every k and arch.
4. per arch, SD's deepest exit >= kd's output minus the larger of the two seed stds
   ("matches or beats") and kd's training seconds per epoch > SD's (the ratio; the paper
   says 4.6x); every arch.
5. per finished SD run (byot_early_exit.py): early exit at the threshold calibrated on
   minival loses <= 0.5 points of test top-1 against the deepest exit and runs faster
   (wall time) than the plain network; every run.
"""

import re

import numpy as np

PAPER_KD_SPEEDUP = 4.6  # BYOT sec. 4: self distillation trains 4.6x faster than KD
MAX_LOSS_POINTS = 0.5
REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
CLAIMS = ("(1) the deepest SD exit beats the baseline",
          "(2) deeper networks gain more from SD",
          "(3) SD's shallow exits beat deep supervision's at every depth",
          "(4) SD matches or beats classical KD while training faster",
          "(5) early exit at a calibrated threshold keeps accuracy within 0.5 points at a "
          "measured speed-up")


def not_measured(why):
    return f"not measured ({why})"


def depth_of(arch):
    """The depth in an arch's name (``cifar_resnet18`` -> 18, ``cifar_wrn20_8`` -> 20)."""
    found = re.search(r"[a-z](\d+)", arch.split("_", 1)[-1])
    if not found:
        raise ValueError(f"No depth in the arch name {arch!r} (expected e.g. cifar_resnet18).")
    return int(found.group(1))


def per_seed(rows, arch, method, exit_, key="top1_best"):
    """``{seed: value}`` of one (arch, method, exit)."""
    return {r["seed"]: r[key] for r in rows
            if (r["arch"], r["method"], r["exit"]) == (arch, method, exit_)}


def stat(values):
    """mean / population std / n / seeds of ``{seed: value}`` (None when empty)."""
    if not values:
        return None
    v = np.array(list(values.values()), dtype=float)
    return dict(mean=round(float(v.mean()), 4), std=round(float(v.std()), 4), n=len(v),
                seeds=sorted(values))


def deepest(rows, arch, method):
    """The deepest exit number of a method's rows in ``arch`` (None without exits)."""
    exits = [r["exit"] for r in rows if (r["arch"], r["method"]) == (arch, method)
             and isinstance(r["exit"], int)]
    return max(exits) if exits else None


def compare(rows, arch, a, b, key="top1_best"):
    """``a`` vs ``b`` (each ``(method, exit)``): both stats, the gain of means, and the
    seeds' paired gains (seeds both finished); None when either is missing."""
    va, vb = per_seed(rows, arch, *a, key=key), per_seed(rows, arch, *b, key=key)
    if not va or not vb:
        return None
    sa, sb = stat(va), stat(vb)
    return dict(a=sa, b=sb, gain=round(sa["mean"] - sb["mean"], 4),
                paired_gains={s: round(va[s] - vb[s], 4) for s in sorted(set(va) & set(vb))})


def _both(rows, arch, a, b):
    """:func:`compare` on top1_best with top1_last beside it (None when missing)."""
    best = compare(rows, arch, a, b)
    return best and dict(best, last=compare(rows, arch, a, b, key="top1_last"))


def _verdict(measured, ok, missing):
    """reproduced / not reproduced over the measured archs, else not measured."""
    if not measured:
        return not_measured("; ".join(missing) or "no finished runs")
    return REPRODUCED if all(ok(m) for m in measured.values()) else NOT_REPRODUCED


def claim_sd_beats_baseline(rows, archs):
    measured, missing = {}, []
    for arch in archs:
        k = deepest(rows, arch, "self_distillation")
        got = k and _both(rows, arch, ("self_distillation", k), ("baseline", "output"))
        if got:
            measured[arch] = dict(got, deepest_exit=k)
        else:
            missing.append(f"{arch}: no finished baseline and self_distillation runs")
    verdict = _verdict(measured, lambda m: m["gain"] > 0, missing)
    return verdict, dict(per_arch=measured, not_measured=missing,
                         read="a: SD deepest exit, b: baseline; gain = a - b (points)")


def claim_deeper_gains_more(rows, archs):
    _, first = claim_sd_beats_baseline(rows, archs)
    gains = sorted((depth_of(a), m["gain"], a) for a, m in first["per_arch"].items())
    numbers = dict(by_depth=[dict(arch=a, depth=d, gain=g) for d, g, a in gains],
                   not_measured=first["not_measured"])
    if len({d for d, _, _ in gains}) < 2:
        return not_measured("needs SD and baseline runs of two or more depths; got "
                            f"{[a for _, _, a in gains] or 'none'}"), numbers
    d, g = np.array([x[0] for x in gains], float), np.array([x[1] for x in gains], float)
    numbers["slope_points_per_layer"] = round(float(np.polyfit(d, g, 1)[0]), 4)
    rising = all(b[0] > a[0] and b[1] > a[1] for a, b in zip(gains, gains[1:]))
    return REPRODUCED if rising else NOT_REPRODUCED, numbers


def claim_shallow_exits(rows, archs):
    measured, missing = {}, []
    for arch in archs:
        n = min(deepest(rows, arch, "self_distillation") or 0,
                deepest(rows, arch, "deep_supervision") or 0)
        per_exit = {k: _both(rows, arch, ("self_distillation", k), ("deep_supervision", k))
                    for k in range(1, n + 1)}
        if n:
            measured[arch] = per_exit
        else:
            missing.append(f"{arch}: no finished self_distillation and deep_supervision runs")
    verdict = _verdict(measured, lambda m: all(e["gain"] > 0 for e in m.values()), missing)
    return verdict, dict(per_arch=measured, not_measured=missing,
                         read="per exit k: a: SD exit k, b: deep supervision exit k")


def _seconds(rows, arch, method):
    """Mean training seconds per data epoch over a method's seeds (one value per run)."""
    runs = {(r["seed"]): r["train_s_per_epoch"] for r in rows
            if (r["arch"], r["method"]) == (arch, method) and r["train_s_per_epoch"]}
    return float(np.mean(list(runs.values()))) if runs else None


def _kd_arch(rows, arch):
    """Claim 4 in one arch: accuracy, tolerance, the kd / SD seconds ratio (None: missing)."""
    k = deepest(rows, arch, "self_distillation")
    acc = k and _both(rows, arch, ("self_distillation", k), ("kd", "output"))
    sd_s, kd_s = _seconds(rows, arch, "self_distillation"), _seconds(rows, arch, "kd")
    if not acc or not sd_s or not kd_s:
        return None
    teacher = next((_seconds(rows, a, "kd_teacher") for a in {r["arch"] for r in rows
                    if r["method"] == "kd_teacher"}), None)
    tol = max(acc["a"]["std"], acc["b"]["std"])
    return dict(acc, deepest_exit=k, tolerance=tol, matches=acc["gain"] >= -tol,
                sd_s_per_epoch=round(sd_s, 3), kd_s_per_epoch=round(kd_s, 3),
                kd_over_sd=round(kd_s / sd_s, 3), paper_kd_over_sd=PAPER_KD_SPEEDUP,
                kd_with_teacher_over_sd=teacher and round((kd_s + teacher) / sd_s, 3))


def claim_kd(rows, archs):
    measured, missing = {}, []
    for arch in archs:
        got = _kd_arch(rows, arch)
        if got:
            measured[arch] = got
        else:
            missing.append(f"{arch}: no finished self_distillation and kd runs with timings")
    verdict = _verdict(measured, lambda m: m["matches"] and m["kd_over_sd"] > 1, missing)
    return verdict, dict(per_arch=measured, not_measured=missing, read=(
        "a: SD deepest exit, b: kd; matches when gain >= -tolerance (the larger seed std); "
        "kd_over_sd: training seconds per epoch, kd / SD (> 1: SD trains faster)"))


def claim_early_exit(early_exit):
    """Claim 5 from :func:`byot_early_exit.measure_all`'s result (``None``: not run)."""
    if early_exit is None or early_exit.get("skipped"):
        why = (early_exit or {}).get("skipped", "the early-exit measurement was not run")
        return not_measured(why), {}
    runs = early_exit["runs"]
    if not runs:
        return not_measured("no finished self_distillation run"), early_exit
    ok = [r["test"]["loss_vs_deepest_points"] <= MAX_LOSS_POINTS
          and r["timing"]["speedup_wall"] > 1 for r in runs]
    return REPRODUCED if all(ok) else NOT_REPRODUCED, early_exit


def judge(rows, archs, early_exit=None, planned=None, finished=None):
    """The ``claims`` list of the evidence JSON: {claim, verdict, numbers} x 5."""
    out = [claim_sd_beats_baseline(rows, archs), claim_deeper_gains_more(rows, archs),
           claim_shallow_exits(rows, archs), claim_kd(rows, archs),
           claim_early_exit(early_exit)]
    incomplete = planned is not None and finished != planned
    table = (f"incomplete table: {finished} of {planned} planned runs finished"
             if incomplete else "complete table")
    return [dict(claim=c, verdict=v, numbers=dict(n, table=table))
            for c, (v, n) in zip(CLAIMS, out)]


def _ms(s):
    return f"{s['mean']:.2f} ± {s['std']:.2f} (n={s['n']})"


def _pair(m, a, b):
    """``a 85.10 ± 0.20 vs b 84.90 ± 0.30: +0.20 (seeds +0.10 +0.30)``."""
    seeds = " ".join(f"{g:+.2f}" for g in m["paired_gains"].values())
    return f"{a} {_ms(m['a'])} vs {b} {_ms(m['b'])}: {m['gain']:+.2f} (seeds {seeds})"


def _lines_1(n):
    return [f"{arch}: " + _pair(m, f"SD exit {m['deepest_exit']}", "baseline")
            for arch, m in n["per_arch"].items()]


def _lines_2(n):
    line = "; ".join(f"depth {x['depth']} {x['arch']} {x['gain']:+.2f}" for x in n["by_depth"])
    slope = n.get("slope_points_per_layer")
    return [line + ("" if slope is None else f"; slope {slope:+.3f} points per layer")]


def _lines_3(n):
    return [f"{arch}: " + ", ".join(f"exit {k} {e['a']['mean']:.2f} vs {e['b']['mean']:.2f} "
                                    f"({e['gain']:+.2f})" for k, e in m.items())
            for arch, m in n["per_arch"].items()]


def _lines_4(n):
    out = []
    for arch, m in n["per_arch"].items():
        teacher = m["kd_with_teacher_over_sd"]
        out.append(f"{arch}: {_pair(m, 'SD exit %d' % m['deepest_exit'], 'kd')}, tolerance "
                   f"{m['tolerance']:.2f}; s/epoch kd {m['kd_s_per_epoch']:.1f} / SD "
                   f"{m['sd_s_per_epoch']:.1f} = {m['kd_over_sd']:.2f}x (paper "
                   f"{m['paper_kd_over_sd']}x)" + (f", with the teacher's {teacher:.2f}x"
                                                   if teacher else ""))
    return out


def _lines_5(n):
    out = []
    for r in n.get("runs", []):
        t, s = r["test"], r["timing"]
        out.append(f"{r['arch']} seed {r['seed']}: threshold {r['thresholds'][0]:.3f}; test "
                   f"top-1 early exit {t['early_exit_top1']:.2f} / deepest "
                   f"{t['deepest_top1']:.2f} / ensemble {t['ensemble_top1']:.2f}, loss "
                   f"{t['loss_vs_deepest_points']:+.2f}; FLOPs {t['flops_fraction']:.3f}x; "
                   f"speed-up {s['speedup_wall']:.2f}x wall, {s['speedup_cpu']:.2f}x CPU")
    return out


def format_claims(claims):
    """The claims as text: each verdict, then its numbers one line per arch (or run)."""
    render = (_lines_1, _lines_2, _lines_3, _lines_4, _lines_5)
    lines = ["Claims (test top-1 % at the epoch chosen on minival, mean ± std over seeds; "
             f"{claims[0]['numbers']['table']})"]
    for c, lines_of in zip(claims, render):
        head, _, why = c["verdict"].partition(" (")
        lines.append(f"{c['claim']}: {head.upper()}" + (f" ({why}" if why else ""))
        lines += [f"    {x}" for x in lines_of(c["numbers"])]
        lines += [f"    not measured: {x}" for x in c["numbers"].get("not_measured", [])]
    return "\n".join(lines)
