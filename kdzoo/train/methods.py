"""The training methods of :class:`kdzoo.train.SupervisedRun`, one entry each (issue 26).

Why a table: the preamble, fit, evaluation, save and metrics of every run are written
once (:func:`kdzoo.train.run_body.execute`, which FunMatch runs share); what differs by
method is only how its model is built and compiled for a run (inside the strategy's
scope), which frozen teachers its settings record (their weights' sha256, so a retrained
teacher is a different run) and which Keras model it exports as ``model.keras``. Adding
a method = its model in one file (e.g. :mod:`kdzoo.distill.classical_kd`) + one entry
here + its tests.
"""

import dataclasses

import keras

__all__ = ["Method", "METHODS", "get_method"]


@dataclasses.dataclass(frozen=True)
class Method:
    """``build(run, spec, steps)`` -> compiled model; ``export(model)`` -> what
    ``model.keras`` holds; ``teachers(model)`` -> frozen models whose weights the run's
    record pins (``[]``: none); ``uses_teacher``: whether ``run.teacher`` is read."""

    name: str
    build: object
    export: object = staticmethod(lambda model: model)
    teachers: object = staticmethod(lambda model: [])
    uses_teacher: bool = False


def _labels(run, spec, steps):
    """Plain CE; with ``mixup_alpha`` the soft labels' CE (the runner one-hots eval labels)."""
    model = run.model()
    loss = (keras.losses.CategoricalCrossentropy(from_logits=True) if run.mixup_alpha
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    metric = (keras.metrics.CategoricalAccuracy(name="accuracy") if run.mixup_alpha
              else keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
    model.compile(optimizer=run.optimizer(steps), loss=loss, metrics=[metric],
                  jit_compile=run.jit_compile)
    return model


def _exits(run, spec, steps):
    """``kdzoo.SelfDistillation`` over the network's stages, in ``run.method``'s mode."""
    from kdzoo.distill.self_distill import SelfDistillation
    model = SelfDistillation(run.model(), num_classes=spec.num_classes, alpha=run.alpha,
                             temperature=run.temperature, version=run.version,
                             feature_weight=run.feature_weight, mode=run.method)
    model.compile(optimizer=run.optimizer(steps), jit_compile=run.jit_compile)
    return model


def _knowledge_distillation(run, spec, steps):
    """Classical KD from ``run.teacher`` (frozen) into ``run.model()``."""
    from kdzoo.distill.classical_kd import KnowledgeDistillation
    model = KnowledgeDistillation(run.teacher, run.model(), alpha=run.alpha,
                                  temperature=run.temperature)
    if model.teacher.output_shape[-1] != spec.num_classes:
        raise ValueError(f"teacher={run.teacher!r} predicts {model.teacher.output_shape[-1]} "
                         f"classes; {spec.name} has {spec.num_classes}.")
    model.compile(optimizer=run.optimizer(steps), jit_compile=run.jit_compile)
    return model


METHODS = {m.name: m for m in (
    Method("labels", _labels),
    Method("self_distillation", _exits),
    Method("deep_supervision", _exits),
    Method("knowledge_distillation", _knowledge_distillation,
           export=lambda model: model.student, teachers=lambda model: [model.teacher],
           uses_teacher=True),
)}


def get_method(run):
    """The :class:`Method` of ``run.method``; a clear error for an unknown name or a
    ``teacher`` the method does not read (or lacks)."""
    method = METHODS.get(run.method)
    if method is None:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {run.method!r}.")
    teacher = getattr(run, "teacher", None)
    if method.uses_teacher and teacher is None:
        raise ValueError(f"method={run.method!r} needs teacher= (a trained keras.Model, a "
                         "path to its .keras file, or a callable returning it).")
    if not method.uses_teacher and teacher is not None:
        raise ValueError(f"teacher= is only read by method='knowledge_distillation'; "
                         f"method={run.method!r} would ignore it. Drop teacher= or change "
                         "the method.")
    return method
