"""Classical knowledge distillation (Hinton et al. 2015) from a frozen, trained teacher.

Why in kdzoo: the BYOT paper (Zhang et al. 2019) compares self distillation with
"traditional distillation" from a larger trained teacher; issue 28's table needs that
comparison on the same data and schedule as the other methods. FunMatch is not it
(no labels, the teacher and student see views mixed up and re-cropped per step);
this is the textbook form, trained on labels and on the teacher's softened outputs
of the very same (augmented) images the student sees:

    loss = (1 - alpha) * CE(labels, z_s) + alpha * T**2 * KL(softmax(z_t/T) || softmax(z_s/T))

(``kdzoo.distill.losses.kl_divergence``: batch mean, T² factor). Sources:

* Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network",
  section 2: a weighted average of the CE on the true labels and the CE to the
  teacher's soft targets at the same high T, the soft term multiplied by T² "since
  the magnitudes of the gradients produced by the soft targets scale as 1/T²".
  The KL differs from that soft CE by the teacher's entropy, a constant of the
  student: same gradient.
* The BYOT official code (ArchipLab-LinfengZhang/pytorch-self-distillation-final,
  ``train.py``) has no classical KD code; its self-distillation weights
  ``loss_coefficient = 0.3`` (line 18) and ``temperature = 3.0`` (line 22) are the
  defaults here, so KD and self distillation split labels vs teacher the same way
  at the same T. Unlike that file's ``CrossEntropy`` (lines 28-31, no T²) this
  term carries T², as Hinton's does: with T = 3 it weighs 9x the official
  self-distillation term (``docs/self_distillation.md``, "kd method").

The teacher is frozen (``trainable = False``), called with ``training=False`` (its
BatchNorm statistics stay as trained) and its logits pass through ``stop_gradient``:
nothing it holds changes. ``evaluate`` / ``predict`` score the student alone (what
is exported); the evaluation loss is the student's CE on the labels, as a plain
network's. ``save_weights`` / ``load_weights`` and the runner's checkpoints hold the
student (and the optimizer), never the teacher, which comes back from its own file.
"""

import os

import keras
import tensorflow as tf
from keras import ops

from kdzoo.distill import losses
from kdzoo.distill._checks import check_outputs_logits
from kdzoo.optim.gradients import apply_with_global_clip

__all__ = ["KnowledgeDistillation", "kd_loss", "load_teacher", "ALPHA", "TEMPERATURE"]

ALPHA = 0.3         # BYOT train.py line 18 (loss_coefficient)
TEMPERATURE = 3.0   # BYOT train.py line 22


def _check_alpha(alpha):
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight of the teacher's "
                         f"term; 1 - alpha weighs the labels' CE), got {alpha!r}.")
    return float(alpha)


def _ce(labels, logits):
    """Batch mean CE from logits; class ids ``[B]`` or (mixup) probabilities ``[B, K]``."""
    logits = ops.cast(logits, "float32")
    if len(labels.shape) == 2 and labels.shape[-1] == logits.shape[-1]:
        per = keras.losses.categorical_crossentropy(ops.cast(labels, "float32"), logits,
                                                    from_logits=True)
    else:
        per = keras.losses.sparse_categorical_crossentropy(ops.reshape(labels, (-1,)), logits,
                                                           from_logits=True)
    return ops.mean(per)


def kd_loss(labels, student_logits, teacher_logits, alpha=ALPHA, temperature=TEMPERATURE):
    """``(loss, ce, kd)``: the module's formula; ``kd`` is T² * KL, unweighted."""
    alpha = _check_alpha(alpha)
    ce = _ce(labels, student_logits)
    kd = losses.kl_divergence(ops.stop_gradient(teacher_logits), student_logits, temperature,
                              t2_scaling=True)
    return (1.0 - alpha) * ce + alpha * kd, ce, kd


def load_teacher(teacher):
    """A ``keras.Model`` from a model, a path to a saved ``.keras`` model, or a callable."""
    if isinstance(teacher, (str, os.PathLike)):
        path = os.fspath(teacher)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"teacher={path!r}: no such file. Pass a trained teacher saved as .keras "
                "(e.g. the model.keras a kdzoo.train.SupervisedRun(method='labels') run "
                "writes), a keras.Model, or a callable returning one.")
        import kdzoo.models  # noqa: F401  (registers kdzoo's layers for loading)
        teacher = keras.saving.load_model(path, compile=False)
    elif callable(teacher) and not isinstance(teacher, keras.Model):
        teacher = teacher()
    if not isinstance(teacher, keras.Model):
        raise TypeError(f"teacher must be a keras.Model, a path to a .keras file or a "
                        f"callable returning a model; got {type(teacher).__name__}.")
    return teacher


@keras.saving.register_keras_serializable(package="kdzoo")
class KnowledgeDistillation(keras.Model):
    """A student trained on labels and a frozen teacher's softened logits (module doc).

    Args:
      teacher: a trained ``keras.Model`` (logits; see :func:`load_teacher` for paths).
      student: the ``keras.Model`` to train (logits, same classes as the teacher).
      alpha: weight of the teacher's term, in [0, 1]; 0 is plain CE training.
      temperature: T > 0 of both tempered softmaxes.
    """

    def __init__(self, teacher, student, alpha=ALPHA, temperature=TEMPERATURE,
                 name="knowledge_distillation", **kwargs):
        super().__init__(name=name, **kwargs)
        teacher = load_teacher(teacher)
        if not isinstance(student, keras.Model):
            raise TypeError(f"student must be a keras.Model, got {type(student).__name__}.")
        check_outputs_logits(teacher, "teacher")
        check_outputs_logits(student, "student")
        k_t, k_s = teacher.output_shape[-1], student.output_shape[-1]
        if k_t != k_s:
            raise ValueError(f"The teacher {teacher.name!r} predicts {k_t} classes but the "
                             f"student {student.name!r} predicts {k_s}: KD needs one label "
                             "space.")
        losses._check_temperature(temperature)
        self.alpha, self.temperature = _check_alpha(alpha), float(temperature)
        teacher.trainable = False
        self.teachers = [teacher]  # the name kdzoo.train.checkpointing leaves out
        self.student = student
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.kd_tracker = keras.metrics.Mean(name="kd")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.built = True  # both models are built: checkpoints may be written before fit

    @property
    def teacher(self):
        return self.teachers[0]

    @property
    def metrics(self):
        return [self.loss_tracker, self.ce_tracker, self.kd_tracker, self.accuracy_tracker]

    def compile(self, optimizer="sgd", **kwargs):
        """Keras ``compile`` without ``loss``: the KD loss is built in."""
        if kwargs.pop("loss", None) is not None:
            raise ValueError("KnowledgeDistillation has its own loss ((1 - alpha) * CE + "
                             "alpha * T^2 * KL); do not pass loss= to compile.")
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def export_network(self):
        """The deployable network: the student (the frozen teacher is not part of it).

        Why a method: :func:`kdzoo.to_plain_keras` asks the model which network is the
        deployable one rather than testing its class, so each method answers in its
        own file (as ``model.keras`` of a KD run holds the student).
        """
        return self.student

    def teacher_logits(self, images):
        """The frozen teacher's logits, inference mode, no gradient."""
        return ops.stop_gradient(self.teacher(images, training=False))

    def compute_kd(self, images, labels, training=True):
        """``(loss, ce, kd, student logits)`` of one batch."""
        logits = self.student(images, training=training)
        loss, ce, kd = kd_loss(labels, logits, self.teacher_logits(images), self.alpha,
                               self.temperature)
        return loss, ce, kd, logits

    def _update_accuracy(self, labels, logits):
        if len(labels.shape) == 2 and labels.shape[-1] == logits.shape[-1]:
            labels = ops.argmax(labels, axis=-1)  # mixup's soft labels: their top class
        self.accuracy_tracker.update_state(ops.reshape(labels, (-1,)), logits)

    def train_step(self, data):
        images, labels = data[0], data[1]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            loss, ce, kd, logits = self.compute_kd(images, labels, training=True)
            total = loss
            if self.student.losses:
                total = total + ops.cast(ops.sum(self.student.losses), "float32")
            # Gradients are summed over replicas under tf.distribute: average instead.
            scaled = self.optimizer.scale_loss(total / replicas if replicas > 1 else total)
        apply_with_global_clip(self.optimizer, tape.gradient(scaled, variables), variables)
        self.loss_tracker.update_state(loss)
        self.ce_tracker.update_state(ce)
        self.kd_tracker.update_state(kd)
        self._update_accuracy(labels, logits)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        images, labels = data[0], data[1]
        logits = self.student(images, training=False)
        ce = _ce(labels, logits)
        self.loss_tracker.update_state(ce)
        self._update_accuracy(labels, logits)
        return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy_tracker.result()}

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        return self.student(images, training=False)

    # The weights a KD model saves are its student's: what it trains and exports (the
    # best-epoch report's file then loads into the exported student).
    def save_weights(self, filepath, overwrite=True, **kwargs):
        return self.student.save_weights(filepath, overwrite=overwrite, **kwargs)

    def load_weights(self, filepath, **kwargs):
        return self.student.load_weights(filepath, **kwargs)

    def get_config(self):
        return {"name": self.name, "alpha": self.alpha, "temperature": self.temperature,
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "student": keras.saving.serialize_keras_object(self.student)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        teacher = keras.saving.deserialize_keras_object(config.pop("teacher"))
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        return cls(teacher, student, **config)
