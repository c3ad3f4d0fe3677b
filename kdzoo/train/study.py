"""Studies: many runs of one question (methods x budgets x seeds), resumable, summarised.

Why in the library: a study is what the FunMatch paper's figures are made of
(accuracy against training budget, per method, over seeds). The recipe holds
the study's data (which runs, which budgets); this module runs them one after
another, skips the finished ones (a killed study resumes where it was, and the
run that was interrupted resumes from its checkpoint), and reduces the
measured rows to mean / std / min / max per group.
"""

import json
import os

import numpy as np

from kdzoo.train import run_dir

__all__ = ["run_one", "is_finished", "summarize"]


def is_finished(run):
    """Whether ``run`` has finished *as described now*: ``metrics.json`` for ``run.epochs``.

    A finished directory recorded with other settings raises
    :class:`kdzoo.errors.SettingsMismatchError` naming the keys (the same check
    ``kdzoo.train.run_dir.claim`` makes), so a study never reuses, or reports, results
    under settings they were not produced with. A finished run of fewer epochs is
    not finished: training it extends it.
    """
    path = os.path.join(run.workdir, "metrics.json")
    if not os.path.exists(path):
        return False
    run_dir.check_record(run.workdir, run_dir.settings_of(run), run_dir.defaults_of(run))
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("epochs") == run.epochs


def run_one(run):
    """Train ``run`` (a :class:`kdzoo.train.FunMatchRun`, ``SupervisedRun`` or any
    :class:`kdzoo.train.RunOptions` with a ``train()``) unless finished.

    Returns ``True`` when it trained now, ``False`` when it was already done (with
    the same settings; other settings are refused, ``run.overwrite`` retrains).
    The run trains itself (``run.train()``): the study does not look at its class.
    """
    if not run.overwrite and is_finished(run):
        return False
    run.train()
    return True


def summarize(rows, by=("method", "epochs"), values=("top1", "agreement")):
    """Rows (dicts) -> one dict per group of ``by``: ``n``, and mean/std/min/max of ``values``.

    ``std`` is the population standard deviation over the group's rows (seeds);
    groups keep the order in which they first appear.
    """
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in by), []).append(row)
    out = []
    for key, members in groups.items():
        entry = dict(zip(by, key), n=len(members))
        for name in values:
            v = np.array([m[name] for m in members], dtype=float)
            entry.update({f"{name}_mean": float(v.mean()), f"{name}_std": float(v.std()),
                          f"{name}_min": float(v.min()), f"{name}_max": float(v.max())})
        out.append(entry)
    return out
