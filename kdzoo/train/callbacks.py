"""Keras callbacks that fit the distillers.

* :class:`StudentCheckpoint` is ``keras.callbacks.ModelCheckpoint`` for a
  distiller: it saves ``model.student`` (a ``FunMatchDistiller``'s student)
  instead of the whole distiller, so a checkpoint never carries the frozen
  teacher (for a BiT-R152x2 teacher, 945 MB of float32 weights per save).
  ``plain=True`` saves :func:`kdzoo.to_plain_keras` of it, a file that loads
  without kdzoo. Files are written to a temporary name and renamed.
* :func:`with_directions` (re-exported from :mod:`kdzoo.distill.metric_directions`)
  makes stock ``ModelCheckpoint`` / ``EarlyStopping`` with ``mode="auto"``
  understand a model's own metric trackers.
"""

import os

import keras
from keras.src.utils import io_utils

from kdzoo import atomic
from kdzoo.distill.metric_directions import MetricDirections, with_directions  # noqa: F401


def _student_of(model):
    student = getattr(model, "student", None)
    if not isinstance(student, keras.Model):
        raise TypeError(
            f"StudentCheckpoint saves a distiller's student, but {type(model).__name__} "
            "has no `student` keras.Model attribute. For a model without a frozen teacher "
            "(e.g. SelfDistillation) use keras.callbacks.ModelCheckpoint.")
    return student


class StudentCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that saves only the student of the distiller being fit.

    Same arguments as ``keras.callbacks.ModelCheckpoint`` (``monitor``,
    ``save_best_only``, ``save_weights_only``, ``mode``, ``save_freq``, ...),
    plus ``plain``: save ``kdzoo.to_plain_keras(student)`` (stock layers only;
    not with ``save_weights_only``, whose file holds weights, not classes).
    The monitored metrics are the distiller's (``val_accuracy``,
    ``val_agreement``, ``val_loss``), read from the logs ``fit`` passes.
    """

    def __init__(self, filepath, *args, plain=False, **kwargs):
        super().__init__(filepath, *args, **kwargs)
        if plain and self.save_weights_only:
            raise ValueError("StudentCheckpoint(plain=True) converts the student to stock "
                             "layers for a .keras file; it has no effect with "
                             "save_weights_only=True. Pass one or the other.")
        self.plain = bool(plain)

    def set_model(self, model):
        _student_of(model)  # fail at fit start, not at the first save
        super().set_model(model)

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IsADirectoryError(f"StudentCheckpoint filepath {filepath!r} is an existing "
                                    "directory; give a file name ending in .keras or "
                                    ".weights.h5.")
        student = _student_of(self.model)
        if self.save_weights_only:
            with atomic.atomic_path(filepath, ".weights.h5") as tmp:
                student.save_weights(tmp, overwrite=True)
        else:
            if self.plain:
                from kdzoo.zoo.plain_keras import to_plain_keras  # lazy: imports the models
                student = to_plain_keras(student)
            suffix = ".keras" if filepath.endswith(".keras") else ".h5"
            with atomic.atomic_path(filepath, suffix) as tmp:
                student.save(tmp, overwrite=True)
        if self.verbose > 0:
            io_utils.print_msg(
                f"\nEpoch {epoch + 1}: saved the student to {filepath}")
