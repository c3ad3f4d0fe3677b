"""Distillation losses shared by FunMatch and self distillation.

Convention (stated once, used everywhere): ``kl_divergence`` returns
``T**2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch when
``t2_scaling=True`` (the default, Hinton et al. 2015), so the gradient size does
not shrink as T grows and a loss weight means the same at every temperature.
Pass ``t2_scaling=False`` for the plain KL.

Teacher ensembles (:func:`distill_per_example`): by default the per-teacher
KLs are **summed**, as big_vision's distill trainer does
(``trainers/proj/distill/distill.py``, ``loss_fn``: ``distill_loss +=
dist(student, teacher)`` for each teacher); ``ensemble="mean"`` takes one KL
to the average of the teachers' tempered probabilities instead. Both give the
same gradient direction (cross-entropy is linear in the target, as the
authors' comment there notes): the sum's gradient is ``M`` times the mean's
for ``M`` teachers, and its value is larger by ``M`` x the teachers'
generalised Jensen-Shannon divergence, a constant. The scale matters under
global gradient clipping.
"""

from keras import ops


def _check_temperature(temperature):
    """Python numbers must be > 0 (tensors are the caller's business)."""
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"temperature must be > 0 (T of the tempered softmax, e.g. 1.0 "
                         f"or 10.0), got {temperature}.")


def tempered_probs(logits, temperature):
    """softmax(logits / T), computed in float32."""
    _check_temperature(temperature)
    logits = ops.cast(logits, "float32")
    return ops.softmax(logits / temperature, axis=-1)


def kl_per_example(teacher_probs, student_logits, temperature, t2_scaling=True):
    """KL(teacher_probs || softmax(student_logits / T)) for each example.

    ``teacher_probs`` are already tempered probabilities (an ensemble average or
    cached targets); the teacher side carries no gradient.
    """
    _check_temperature(temperature)
    teacher_probs = ops.stop_gradient(ops.cast(teacher_probs, "float32"))
    student_log_probs = ops.log_softmax(
        ops.cast(student_logits, "float32") / temperature, axis=-1)
    safe = ops.where(teacher_probs > 0, teacher_probs, ops.ones_like(teacher_probs))
    kl = ops.sum(teacher_probs * (ops.log(safe) - student_log_probs), axis=-1)
    return kl * (temperature ** 2) if t2_scaling else kl


ENSEMBLE_MODES = ("sum", "mean")


def check_ensemble(mode):
    """``mode`` if it is one of :data:`ENSEMBLE_MODES`, else a ValueError saying what to pass."""
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"ensemble must be 'sum' (the per-teacher KLs summed, as the "
                         f"authors' trainer does) or 'mean' (one KL to the teachers' "
                         f"averaged probabilities), got {mode!r}.")
    return mode


def mean_probs(targets):
    """``[B, K]`` probabilities from targets ``[B, K]`` or per-teacher ``[B, M, K]``."""
    targets = ops.cast(targets, "float32")
    return ops.mean(targets, axis=1) if len(targets.shape) == 3 else targets


def distill_per_example(targets, student_logits, temperature, t2_scaling=True,
                        ensemble="sum"):
    """The distillation loss of each example, for one teacher or an ensemble.

    ``targets``: tempered teacher probabilities ``[B, K]`` (one teacher) or
    ``[B, M, K]`` (``M`` teachers). ``ensemble="sum"`` sums the ``M``
    per-teacher KLs (big_vision), ``"mean"`` is the KL to their average.
    """
    check_ensemble(ensemble)
    targets = ops.cast(targets, "float32")
    if len(targets.shape) == 2:
        return kl_per_example(targets, student_logits, temperature, t2_scaling)
    if ensemble == "mean":
        return kl_per_example(ops.mean(targets, axis=1), student_logits, temperature,
                              t2_scaling)
    logits = ops.expand_dims(ops.cast(student_logits, "float32"), 1)  # [B, 1, K]
    return ops.sum(kl_per_example(targets, logits, temperature, t2_scaling), axis=-1)


def kl_divergence(teacher_logits, student_logits, temperature=1.0, t2_scaling=True):
    """Batch mean of KL(teacher_T || student_T), from logits on both sides."""
    probs = tempered_probs(teacher_logits, temperature)
    return ops.mean(kl_per_example(probs, student_logits, temperature, t2_scaling))


def feature_hint(features, target_features):
    """Mean squared L2 distance from ``features`` to ``target_features``.

    The target carries no gradient: the hint pulls the shallow features
    towards the deep ones, never the other way (Zhang et al. 2019).
    """
    target = ops.stop_gradient(ops.cast(target_features, "float32"))
    return ops.mean(ops.square(ops.cast(features, "float32") - target))


def agreement(logits_a, logits_b):
    """Fraction of examples on which two models' top-1 predictions agree."""
    same = ops.equal(ops.argmax(logits_a, axis=-1), ops.argmax(logits_b, axis=-1))
    return ops.mean(ops.cast(same, "float32"))
