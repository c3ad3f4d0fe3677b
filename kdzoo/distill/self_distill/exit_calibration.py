"""Early-exit thresholds from held-out images: for an accuracy, a loss bound or a budget.

:func:`calibrate_thresholds` runs the model once over the calibration images,
then simulates the exit rule of :class:`kdzoo.distill.self_distill.early_exit.EarlyExit`
(:func:`simulate`; exact, the rule depends on the exits' logits only) for a
range of candidate thresholds and picks one.

Why more than "the cheapest threshold that reaches the target": accuracy
against threshold is a noisy curve on a finite calibration set.

* The cheapest threshold that merely touches the target is mostly a spike
  of that noise, so by default (``stable=True``) a threshold counts only if
  every higher candidate reaches the target too.
* Even a stable threshold meets the target only on the calibration images.
  ``max_loss`` states the target as the top-1 loss against the deepest exit,
  and ``confidence`` asks for that loss's one-sided upper confidence bound
  to stay within it (paired per-image differences, normal approximation):
  what a user can expect on new images of the same distribution.

Measured (``benchmarks/self_distill.py``, docs/self_distillation.md): with the
cheapest rule 0.5 points lost on the calibration half of Fashion-MNIST's test
set became 1.34 on its other half; with the stable rule on 10,000 unseen
training images, 0.5 became 0.73 on the test set.
"""

from statistics import NormalDist

import numpy as np

from kdzoo.distill._checks import check_image_array
from kdzoo.distill.self_distill.early_exit import _check_labels, exit_flops, validate_thresholds

__all__ = ["calibrate_thresholds", "choose_for_accuracy", "simulate"]


def simulate(exit_logits, thresholds):
    """``(predictions, exit)`` the early-exit rule gives, from every exit's logits.

    ``exit_logits``: list (shallow to deep) of [N, classes] arrays.
    """
    thresholds = validate_thresholds(thresholds, len(exit_logits))
    n = exit_logits[0].shape[0]
    exits = np.full(n, len(exit_logits), dtype=np.int64)
    preds = np.asarray(exit_logits[-1]).argmax(-1)
    undecided = np.ones(n, dtype=bool)
    for k, (z, t) in enumerate(zip(exit_logits[:-1], thresholds)):
        conf = _softmax(np.asarray(z, np.float64)).max(-1)
        leave = undecided & (conf > t)
        exits[leave] = k + 1
        preds[leave] = np.asarray(z)[leave].argmax(-1)
        undecided &= ~leave
    return preds, exits


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _cheapest(table, ok, stable, fallback_key):
    """The cheapest row passing ``ok`` (with ``stable``: and every higher threshold too)."""
    ordered = sorted(table, key=lambda r: r["threshold"])
    if stable:
        passing = []
        for row in reversed(ordered):
            if not ok(row):
                break
            passing.append(row)
    else:
        passing = [r for r in ordered if ok(r)]
    if passing:
        return min(passing, key=lambda r: (r["avg_flops"], -r["accuracy"])), True
    return max(table, key=fallback_key), False


def choose_for_accuracy(table, target_accuracy, *, stable=True):
    """``(row, met)``: the cheapest row of a calibration ``table`` that reaches the target.

    ``stable=True`` (default) only accepts a threshold if every higher candidate
    threshold reaches the target too (see the module docstring); ``stable=False``
    takes the cheapest row that reaches it anywhere. When no row qualifies, the
    most accurate row is returned with ``met=False``.
    """
    return _cheapest(table, lambda r: r["accuracy"] >= target_accuracy, stable,
                     lambda r: (r["accuracy"], -r["avg_flops"]))


def _check_fraction(value, name):
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}.")


def _loss_columns(correct_deep, correct, z):
    """Top-1 loss against the deepest exit and its upper confidence bound (z-score)."""
    d = correct_deep.astype(np.float64) - correct.astype(np.float64)
    loss = float(d.mean())
    spread = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    return loss, loss + z * spread / np.sqrt(len(d))


def calibrate_thresholds(model, images, labels, *, target_accuracy=None, max_loss=None,
                         confidence=None, max_flops=None, max_flops_fraction=None,
                         batch_size=256, num_candidates=200, stable=True):
    """Pick one shared threshold for all shallow exits on held-out data.

    Give exactly one goal:

    * ``target_accuracy``: the cheapest threshold whose top-1 reaches it;
    * ``max_loss``: the cheapest threshold whose top-1 is at most this far below
      the deepest exit's on the same images (``0.005``: half a point); with
      ``confidence`` (e.g. ``0.9``) the loss's one-sided upper confidence bound
      must stay within ``max_loss``, so new images lose no more with that
      probability;
    * ``max_flops`` (average FLOPs per image) or ``max_flops_fraction`` (of the
      plain backbone's FLOPs): the most accurate threshold within the budget.

    For the first two, ``stable`` (default) accepts a threshold only if every
    higher candidate meets the goal too (:func:`choose_for_accuracy`).

    Returns ``{"thresholds", "accuracy", "loss", "loss_bound", "avg_flops",
    "flops_fraction", "avg_sections", "met", "table"}``; ``met`` is False when no
    candidate meets the goal (the most accurate, resp. the cheapest, is returned).
    """
    given = [v is not None for v in (target_accuracy, max_loss, max_flops,
                                     max_flops_fraction)]
    if sum(given) != 1:
        raise ValueError("Give exactly one of target_accuracy, max_loss, max_flops or "
                         "max_flops_fraction.")
    _check_fraction(target_accuracy, "target_accuracy")
    _check_fraction(max_loss, "max_loss")
    if confidence is not None and (max_loss is None or not 0.5 <= confidence < 1.0):
        raise ValueError(f"confidence (got {confidence}) goes with max_loss and lies in "
                         "[0.5, 1), e.g. max_loss=0.005, confidence=0.9.")
    z = NormalDist().inv_cdf(confidence) if confidence is not None else 0.0
    labels = _check_labels(labels, len(images))
    check_image_array(images, "calibrate_thresholds")  # [0, 1] floats: every row exits deep
    exit_logits = [np.asarray(z) for z in model.predict(images, batch_size=batch_size,
                                                         verbose=0)]
    flops = exit_flops(model)
    to_exit = np.asarray(flops["to_exit"], dtype=np.float64)
    correct_deep = exit_logits[-1].argmax(-1) == labels
    conf = np.concatenate([_softmax(z.astype(np.float64)).max(-1) for z in exit_logits[:-1]])
    candidates = np.unique(np.concatenate([
        np.quantile(conf, np.linspace(0.0, 1.0, num_candidates)), [0.0, 1.0]]))
    candidates = candidates[(candidates >= 0.0) & (candidates <= 1.0)]
    table = []
    for t in candidates:
        preds, exits = simulate(exit_logits, [t] * (model.num_exits - 1))
        loss, bound = _loss_columns(correct_deep, preds == labels, z)
        table.append({"threshold": float(t), "accuracy": float(np.mean(preds == labels)),
                      "loss": loss, "loss_bound": bound,
                      "avg_flops": float(to_exit[exits - 1].mean()),
                      "avg_sections": float(exits.mean())})
    if target_accuracy is not None:
        best, met = choose_for_accuracy(table, target_accuracy, stable=stable)
    elif max_loss is not None:
        best, met = _cheapest(table, lambda r: r["loss_bound"] <= max_loss, stable,
                              lambda r: (r["accuracy"], -r["avg_flops"]))
    else:
        budget = max_flops if max_flops is not None else max_flops_fraction * flops["full"]
        ok = [r for r in table if r["avg_flops"] <= budget]
        met = bool(ok)
        best = (max(ok, key=lambda r: (r["accuracy"], -r["avg_flops"])) if ok
                else min(table, key=lambda r: r["avg_flops"]))
    return {"thresholds": [best["threshold"]] * (model.num_exits - 1),
            "accuracy": best["accuracy"], "loss": best["loss"],
            "loss_bound": best["loss_bound"], "avg_flops": best["avg_flops"],
            "flops_fraction": best["avg_flops"] / flops["full"],
            "avg_sections": best["avg_sections"], "met": met, "table": table}
