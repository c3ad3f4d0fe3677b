"""The loss of self distillation ("Be Your Own Teacher", Zhang et al., ICCV 2019).

Summed over exits, with ``z_N`` the deepest exit's logits (the teacher, no gradient)::

    deepest exit:   CE(labels, z_N)
    shallow exit i: (1 - alpha) * CE(labels, z_i) + alpha * KD_i + feature_weight * H_i

``kd_scaling`` chooses ``KD_i``:

* ``"official"`` (default): the authors' ``train.py`` (its ``CrossEntropy`` at lines
  28-31, used at 158): the soft cross entropy
  ``-sum softmax(z_N/T) * log_softmax(z_i/T)``, batch mean, with **no** T**2 factor.
  It has the gradient of KL(teacher || student) (they differ by the teacher's
  entropy, a constant), so the official KD term weighs 1/T**2 of the Hinton form.
* ``"t_squared"``: ``T**2 * KL(softmax(z_N/T) || softmax(z_i/T))`` (Hinton et al.
  2015; the luanyunteng reimplementation and kdzoo before it followed the paper).

``hint`` chooses ``H_i`` (the target carries no gradient in both):

* ``"official"`` (default): ``torch.dist(adapter_i(p_i), p_N)`` as in ``train.py``
  line 162: the L2 norm (not squared) over the whole batch of the difference
  between a learned linear adapter (Dense with bias) of exit i's pooled feature and
  the deepest exit's pooled feature. ``sqrt(sum_rows w_r * |d_r|**2)`` with sample
  weights ``w``; like ``torch.dist`` it is not divided by the batch size.
* ``"feature_maps"``: the paper's text: a squared L2 distance between exit i's
  bottleneck feature maps and the deepest section's feature maps, here the mean
  of the squared differences over rows and elements, without adapter.
* ``"conference"``: the conference version's ``|f1 - f2|^2`` named in the comment of
  ``train.py`` lines 133-134 (the final version put the adapter in front): the
  squared L2 distance between exit i's pooled feature and the deepest pooled
  feature, no adapter. No code for it is published and the comment states no
  normalisation; kdzoo sums the squares over a row's elements and takes the
  (weighted) batch mean.

The exits a hint applies to are chosen by the model (see ``SelfDistillation``); the
terms below take ``None`` for shallow exits without hint.
"""

import keras
from keras import ops

from kdzoo.distill.losses import kl_per_example, tempered_probs

MODES = ("self_distillation", "deep_supervision")
KD_SCALINGS = ("official", "t_squared")
HINTS = ("official", "feature_maps", "conference")


def _labels_to_sparse(labels, num_classes):
    """Integer class ids [B] from sparse labels [B] / [B, 1] or one-hot [B, num_classes]."""
    labels = ops.convert_to_tensor(labels)
    rank = len(labels.shape)
    if rank == 2 and labels.shape[-1] == num_classes and num_classes != 1:
        return ops.cast(ops.argmax(labels, axis=-1), "int32"), labels
    if rank == 2 and labels.shape[-1] == 1:
        labels = ops.reshape(labels, (-1,))
        rank = 1
    if rank != 1:
        raise ValueError(
            f"Labels must be class ids of shape [batch] or one-hot of shape "
            f"[batch, {num_classes}]; got shape {tuple(labels.shape)}.")
    return ops.cast(labels, "int32"), None


def _weights(sample_weight):
    return None if sample_weight is None else ops.cast(ops.reshape(sample_weight, (-1,)),
                                                       "float32")


def _weighted_mean(values, sample_weight):
    if sample_weight is None:
        return ops.mean(values)
    w = _weights(sample_weight)
    return ops.sum(values * w) / ops.maximum(ops.sum(w), 1e-12)


def cross_entropy(labels, logits, sample_weight=None, num_classes=None):
    """Mean softmax cross entropy from logits (sparse or one-hot labels)."""
    num_classes = num_classes or logits.shape[-1]
    logits = ops.cast(logits, "float32")
    sparse, one_hot = _labels_to_sparse(labels, num_classes)
    if one_hot is not None:
        per_example = keras.losses.categorical_crossentropy(
            ops.cast(one_hot, "float32"), logits, from_logits=True)
    else:
        per_example = keras.losses.sparse_categorical_crossentropy(
            sparse, logits, from_logits=True)
    return _weighted_mean(per_example, sample_weight)


def soft_cross_entropy(teacher_logits, student_logits, temperature, sample_weight=None):
    """``-sum softmax(t/T) log_softmax(s/T)``, batch mean; teacher without gradient."""
    p = ops.softmax(ops.stop_gradient(ops.cast(teacher_logits, "float32")) / temperature)
    log_q = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    return _weighted_mean(-ops.sum(p * log_q, axis=-1), sample_weight)


def kd_term(teacher_logits, student_logits, temperature, kd_scaling, sample_weight=None):
    """The KD term of one shallow exit under ``kd_scaling`` (see the module doc)."""
    if kd_scaling == "official":
        return soft_cross_entropy(teacher_logits, student_logits, temperature, sample_weight)
    probs = tempered_probs(ops.stop_gradient(teacher_logits), temperature)
    return _weighted_mean(kl_per_example(probs, student_logits, temperature), sample_weight)


def l2_distance(features, target, sample_weight=None):
    """``torch.dist(features, target)``: the L2 norm of the difference over all elements.

    Rows are weighted by ``sample_weight`` inside the square root. The target carries
    no gradient; a tiny epsilon keeps the gradient finite at distance 0.
    """
    diff = ops.cast(features, "float32") - ops.stop_gradient(ops.cast(target, "float32"))
    per_row = ops.sum(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=-1)
    w = _weights(sample_weight)
    total = ops.sum(per_row if w is None else per_row * w)
    return ops.sqrt(total + 1e-12)


def mean_squared_hint(features, target, sample_weight=None):
    """Mean of the squared differences over rows and elements (the target: no gradient)."""
    diff = ops.cast(features, "float32") - ops.stop_gradient(ops.cast(target, "float32"))
    per_row = ops.mean(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=-1)
    return _weighted_mean(per_row, sample_weight)


def squared_l2_hint(features, target, sample_weight=None):
    """``|f - t|^2`` per row (sum over elements), batch mean; the target: no gradient."""
    diff = ops.cast(features, "float32") - ops.stop_gradient(ops.cast(target, "float32"))
    per_row = ops.sum(ops.reshape(ops.square(diff), (ops.shape(diff)[0], -1)), axis=-1)
    return _weighted_mean(per_row, sample_weight)


_DISTANCES = {"official": l2_distance, "feature_maps": mean_squared_hint,
              "conference": squared_l2_hint}


def self_distillation_terms(labels, exit_logits, exit_features, deep_features, *,
                            alpha=0.3, temperature=3.0, feature_weight=0.03,
                            mode="self_distillation", kd_scaling="official",
                            hint="official", sample_weight=None):
    """Every loss term of one batch, as a dict of scalars.

    ``exit_logits``: shallow to deep, the last is the deepest exit.
    ``exit_features``: one entry per shallow exit: its hint feature (adapted pooled
    feature for ``hint="official"``, pooled feature for ``"conference"``, bottleneck
    maps for ``"feature_maps"``) or
    ``None`` where that exit takes no hint.
    ``deep_features``: the hint target (deepest pooled feature, resp. feature maps).

    Returns ``{"loss", "ce", "kl", "hint", "ce_per_exit", "kl_per_exit",
    "hint_per_exit"}`` where ``ce``/``kl``/``hint`` are the *weighted* sums that
    make up ``loss`` and the ``*_per_exit`` lists hold the unweighted terms
    (``kl`` is the KD term of ``kd_scaling``; ``hint_per_exit`` has ``None`` where
    an exit takes no hint).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if kd_scaling not in KD_SCALINGS:
        raise ValueError(f"kd_scaling must be one of {KD_SCALINGS}, got {kd_scaling!r}.")
    if hint not in HINTS:
        raise ValueError(f"hint must be one of {HINTS}, got {hint!r}.")
    if len(exit_features) != len(exit_logits) - 1:
        raise ValueError(f"Expected {len(exit_logits) - 1} hint features (None where an "
                         f"exit takes no hint) for {len(exit_logits)} exits, got "
                         f"{len(exit_features)}.")
    teacher = exit_logits[-1]
    ce_terms = [cross_entropy(labels, z, sample_weight) for z in exit_logits]
    zero = ops.zeros((), "float32")
    if mode == "deep_supervision":
        ce = ops.sum(ops.stack(ce_terms))
        return {"loss": ce, "ce": ce, "kl": zero, "hint": zero, "ce_per_exit": ce_terms,
                "kl_per_exit": [], "hint_per_exit": []}
    distance = _DISTANCES[hint]
    ce, kl, total_hint = ce_terms[-1], zero, zero
    kl_terms, hint_terms = [], []
    for z, f, c in zip(exit_logits[:-1], exit_features, ce_terms[:-1]):
        k = kd_term(teacher, z, temperature, kd_scaling, sample_weight)
        kl_terms.append(k)
        ce = ce + (1.0 - alpha) * c
        kl = kl + alpha * k
        if f is None:
            hint_terms.append(None)
            continue
        h = distance(f, deep_features, sample_weight)
        hint_terms.append(h)
        total_hint = total_hint + feature_weight * h
    return {"loss": ce + kl + total_hint, "ce": ce, "kl": kl, "hint": total_hint,
            "ce_per_exit": ce_terms, "kl_per_exit": kl_terms, "hint_per_exit": hint_terms}
