"""kdzoo's distillation losses as ``keras.distillation.DistillationLoss`` objects.

For users of Keras' own ``keras.distillation.Distiller`` (Keras >= 3.12) who want
the papers' losses without kdzoo's models or trainers:

* :class:`FunMatchLoss`: function matching's ``T**2 * KL(teacher_T || student_T)``
  (Beyer et al. 2022, big_vision's ``distill`` trainer), for one teacher or an
  ensemble whose per-teacher KLs are summed (``ensemble="sum"``, the authors'
  form) or taken to the averaged probabilities (``"mean"``). It is the same
  function :class:`kdzoo.FunMatchDistiller` trains with
  (:func:`kdzoo.distill.losses.distill_per_example`).
* :class:`SelfDistillationHint`: the feature hint of self distillation (Zhang et
  al. 2019) between a named student layer and a named teacher layer: the
  official code's ``torch.dist`` (L2 norm of the difference over the batch,
  ``form="official"``) or the paper text's mean squared distance
  (``form="feature_maps"``), with the target carrying no gradient.

What Keras' ``Distiller`` does not do, and kdzoo does: it feeds teacher and
student the *same* input (so "consistent teaching" needs the augmentation in the
dataset, and independent/fixed views are not expressible), and it trains only the
student's weights: a hint adapter (the official code's learned Dense before the
hint) must therefore be a layer *of the student* whose output the hint names.
"""

import keras
from keras import ops

from kdzoo.distill.losses import check_ensemble, distill_per_example, tempered_probs
from kdzoo.distill.self_distill.losses import l2_distance, mean_squared_hint

HINT_FORMS = {"official": l2_distance, "feature_maps": mean_squared_hint}


def _members(teacher_outputs):
    """Per-teacher logits: a tensor ``[B, K]``, ``[B, M, K]`` or a list of ``[B, K]``."""
    if isinstance(teacher_outputs, (list, tuple)):
        return list(teacher_outputs)
    if len(teacher_outputs.shape) == 3:
        return [teacher_outputs[:, m] for m in range(teacher_outputs.shape[1])]
    return [teacher_outputs]


class FunMatchLoss(keras.distillation.DistillationLoss):
    """``T**2 * KL(teacher_T || student_T)`` per example, batch mean; teachers summed.

    Args:
        temperature: T of both tempered softmaxes (> 0).
        ensemble: ``"sum"`` (per-teacher KLs summed, big_vision) or ``"mean"``
            (one KL to the teachers' averaged tempered probabilities).
    """

    def __init__(self, temperature=1.0, ensemble="sum"):
        tempered_probs(ops.zeros((1, 2)), temperature)  # the same check as kdzoo's
        self.temperature = float(temperature)
        self.ensemble = check_ensemble(ensemble)

    def validate_outputs(self, teacher_outputs, student_outputs):
        classes = student_outputs.shape[-1]
        for i, member in enumerate(_members(teacher_outputs)):
            if member.shape[-1] != classes:
                raise ValueError(f"FunMatchLoss: teacher output {i} has {member.shape[-1]} "
                                 f"classes, the student {classes}. Distillation matches "
                                 "the same classes: give both models the same head.")

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        targets = ops.stack([tempered_probs(ops.stop_gradient(m), self.temperature)
                             for m in _members(teacher_outputs)], axis=1)
        if targets.shape[1] == 1:
            targets = targets[:, 0]
        return ops.mean(distill_per_example(targets, student_outputs, self.temperature,
                                            ensemble=self.ensemble))

    def get_config(self):
        return {"temperature": self.temperature, "ensemble": self.ensemble}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class SelfDistillationHint(keras.distillation.FeatureDistillation):
    """The self-distillation feature hint between two named layers.

    Args:
        teacher_layer_name: the layer whose output is the hint target (in
            self distillation: the deepest section's pooled feature).
        student_layer_name: the student's layer pulled towards it (in the
            official code: the learned adapter of a shallow exit's feature,
            which must then be a layer of the student).
        form: ``"official"`` (``torch.dist``: L2 norm of the difference over the
            whole batch, the official ``train.py``) or ``"feature_maps"`` (mean
            squared difference, the paper's text).
    """

    def __init__(self, teacher_layer_name, student_layer_name, form="official"):
        if form not in HINT_FORMS:
            raise ValueError(f"form must be one of {sorted(HINT_FORMS)}, got {form!r}.")
        super().__init__(loss="mse", teacher_layer_name=teacher_layer_name,
                         student_layer_name=student_layer_name)
        self.form = form

    def validate_outputs(self, teacher_outputs, student_outputs):
        if tuple(teacher_outputs.shape[1:]) != tuple(student_outputs.shape[1:]):
            raise ValueError(
                f"SelfDistillationHint: student layer {self.student_layer_name!r} gives "
                f"shape {tuple(student_outputs.shape)}, teacher layer "
                f"{self.teacher_layer_name!r} {tuple(teacher_outputs.shape)}. Add an "
                "adapter to the student (e.g. a Dense to the teacher's width, as the "
                "official code does) and name its output layer here.")

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return HINT_FORMS[self.form](student_outputs, teacher_outputs)

    def get_config(self):
        return {"teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name, "form": self.form}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
