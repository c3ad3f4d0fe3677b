"""Studies: many runs of one question (methods x budgets x seeds), resumable, summarised.

Why in the library: a study is what the FunMatch paper's figures are made of
(accuracy against training budget, per method, over seeds). The recipe holds
the study's data (which runs, which budgets); this module runs them one after
another, skips the finished ones (a killed study resumes where it was, and the
run that was interrupted resumes from its checkpoint), and reduces the
measured rows to mean / std / min / max per group.
"""

import os

import numpy as np

__all__ = ["run_one", "is_finished", "summarize"]


def is_finished(run):
    """A run is finished once its ``metrics.json`` exists (it is written last, atomically)."""
    return os.path.exists(os.path.join(run.workdir, "metrics.json"))


def run_one(run):
    """Train ``run`` (a :class:`kdzoo.train.FunMatchRun` or ``SupervisedRun``) unless finished.

    Returns ``True`` when it trained now, ``False`` when it was already done.
    """
    from kdzoo.train import FunMatchRun, run_funmatch, run_supervised
    if is_finished(run) and not run.overwrite:
        return False
    (run_funmatch if isinstance(run, FunMatchRun) else run_supervised)(run)
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
