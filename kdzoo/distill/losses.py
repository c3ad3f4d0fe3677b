"""Distillation losses shared by FunMatch and self distillation.

Convention (stated once, used everywhere): ``kl_divergence`` returns
``T**2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch when
``t2_scaling=True`` (the default, Hinton et al. 2015), so the gradient size does
not shrink as T grows and a loss weight means the same at every temperature.
Pass ``t2_scaling=False`` for the plain KL.
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
