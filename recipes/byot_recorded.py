"""Runs already recorded in the committed evidence: a table trained over several machines.

Why: the BYOT table is about 7 CPU-hours, more than one working session, and a
session's machine (with its work directories) may not be there for the next one.
So each report commits the rows of every finished run, with where they were
produced (``runs``: commit, command, CPU flags, precision per run), and the next
report, on any machine, keeps the rows of a run whose work directory is not
there instead of retraining it, provided the committed evidence was made with
the very same study settings (:func:`same_study`). A run present in the work
directory is always measured afresh. The kd teacher is the exception: kd runs
read its ``model.keras``, so it is trained again wherever kd runs remain.
"""

import json
import os

# The study fields that decide what a run computes (sizing estimates and the selection
# of archs / methods / seeds do not; each run's arch build is compared on its own).
RUN_DEFINING = ("dataset", "train_per_class", "subset_seed", "image_size", "epochs",
                "batch_size", "lr", "weight_decay", "version", "alpha", "temperature",
                "feature_weight", "mixed_precision", "crop", "pad_fill", "flip",
                "autoaugment", "cutout", "kd")


def run_key(key):
    return (key["arch"], key["method"], int(key["seed"]))


def same_study(old, new, arch):
    """Whether a run of ``arch`` recorded under study ``old`` computes what ``new`` asks."""
    if {k: old.get(k) for k in RUN_DEFINING} != {k: _plain(new.get(k)) for k in RUN_DEFINING}:
        return False
    return old.get("archs", {}).get(arch) == _plain(new["archs"].get(arch))


def _plain(value):
    return json.loads(json.dumps(value, default=list))


def load(evidence_path, s):
    """``{(arch, method, seed): {rows, provenance, early_exit}}`` of the runs recorded in the
    evidence at ``evidence_path`` with ``s``'s settings (``{}``: no evidence yet); older
    evidence, without per-run provenance, gives its report's as ``"reported_with"``."""
    if not os.path.exists(evidence_path):
        return {}
    with open(evidence_path, encoding="utf-8") as f:
        old = json.load(f)
    recorded, entry = {}, _entries(old)
    for row in old.get("rows", []):
        key = run_key(row)
        if key[1] != "kd_teacher" and same_study(old.get("study", {}), s, key[0]):
            recorded.setdefault(key, entry(key))["rows"].append(row)
    return recorded


def _entries(old):
    """``key -> {rows: [], provenance, early_exit}`` of one evidence record (indexed once)."""
    provenance = {run_key(p): p for p in old.get("runs", [])}
    legacy = {k: old.get(k) for k in ("commit", "command", "cpu_flags", "precision")}
    early = {(r["arch"], "self_distillation", int(r["seed"])): r for r in _early_exit_runs(old)}
    return lambda key: dict(rows=[], early_exit=early.get(key), provenance=provenance.get(
        key) or dict(arch=key[0], method=key[1], seed=key[2], reported_with=legacy))


def _early_exit_runs(old):
    """Claim 5's per-run measurements of an evidence record (``early_exit`` or, in older
    records, inside claim 5's numbers)."""
    if old.get("early_exit") is not None:
        return old["early_exit"].get("runs", [])
    for claim in old.get("claims", []):
        if claim["claim"].startswith("(5)"):
            return claim.get("numbers", {}).get("runs", [])
    return []


def still_to_train(entries, recorded, finished):
    """The entries to train: not finished here and not recorded; the kd teacher whenever a
    kd run is among them (``finished(run)``: finished in this work directory)."""
    todo = [(k, r) for k, r in entries
            if k["method"] != "kd_teacher" and run_key(k) not in recorded]
    if any(k["method"] == "kd" and not finished(r) for k, r in todo):
        todo = [(k, r) for k, r in entries if k["method"] == "kd_teacher"] + todo
    return todo
