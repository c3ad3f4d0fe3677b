"""Consistent and patient teaching (Beyer et al., CVPR 2022): ``FunMatchDistiller``.

A frozen teacher (one model, or a list: an ensemble, whose per-teacher KLs
are summed as in the authors' trainer, or with ``ensemble="mean"`` one KL to
their averaged probabilities) and a student; the loss is
``KL(teacher_T || student_T)`` from
:mod:`kdzoo.distill.losses` (scaled by T**2 by default: see there), and
ground-truth labels are never used by it. ``variant`` picks one of the
paper's eight ways of teaching (:data:`kdzoo.distill.funmatch.views.VARIANTS`).

The data side (the train stream, fixed-teacher targets, teacher caches,
``make_train_dataset`` / ``make_eval_dataset`` and ``fit``) is
:class:`kdzoo.distill.funmatch.data.FunMatchData`, which this class mixes in.

Evaluation
----------
``evaluate`` / ``validation_data`` take batched ``(images, labels)``: the
largest central square (``eval_crop_fraction``) resized to each model's size,
in the step (antialiased, except under ``jit_compile=True``, where XLA only
has plain bilinear resizing). For variable-size validation images, or
antialiased views under XLA, use :meth:`make_eval_dataset`; its
``resize_small=`` gives the authors' ``resize_small(R)|central_crop(S)``
(what ``kdzoo.train`` evaluates with). Metrics: ``loss`` (the distillation KL),
``accuracy`` (student top-1), ``agreement`` (student/teacher top-1
agreement) and ``teacher_accuracy``.
"""

import keras
import tensorflow as tf
from keras import ops

from kdzoo.distill.metric_directions import with_directions
from kdzoo.data import augment
from kdzoo.distill import losses
from kdzoo.distill._checks import CheckedInputs, check_outputs_logits
from kdzoo.distill.funmatch.data import FunMatchData
from kdzoo.optim.gradients import apply_with_global_clip
from kdzoo.distill.funmatch.targets import TargetSource
from kdzoo.distill.funmatch.views import (VARIANTS, ViewMaker, check_number, check_size,
                                          check_variant)

__all__ = ["FunMatchDistiller", "VARIANTS"]

_AUTOTUNE = tf.data.AUTOTUNE


def _static_size(model):
    shape = model.input_shape
    if isinstance(shape, list):
        raise ValueError(f"Model {model.name!r} has several inputs; FunMatchDistiller "
                         "needs image classifiers with one image input.")
    return shape


def _num_classes(model, role):
    shape = model.output_shape
    if isinstance(shape, list) or len(shape) != 2 or shape[-1] is None:
        raise ValueError(f"The {role} {model.name!r} must output logits of shape "
                         f"(batch, num_classes); its output shape is {shape}.")
    return int(shape[-1])


@keras.saving.register_keras_serializable(package="kdzoo")
class FunMatchDistiller(FunMatchData, CheckedInputs, keras.Model):
    """Distil a frozen ``teacher`` into ``student`` by function matching.

    Args:
        teacher: a ``keras.Model`` returning logits, or a list of them (an
            ensemble, see ``ensemble``). Frozen:
            ``trainable`` is set to False and it always runs with ``training=False``.
        student: a ``keras.Model`` returning logits; taking raw [0, 255] pixels.
        variant: one of ``kdzoo.distill.VARIANTS`` (default ``"funmatch"``).
        temperature: T of the tempered softmax on both sides.
        image_size: side of the student's (square) train/eval views.
        teacher_image_size: side of the teacher's views (default ``image_size``);
            the teacher sees the same crop box at this resolution.
        seed: seed of all augmentation and shuffling.
        flip: random horizontal flips on train views.
        crop_fraction: side of random / central crops as a fraction of the
            short image side (``rc``/``cc`` variants).
        inception_area_range: area range of inception crops.
        mixup_alpha: ``funmatch``'s batch mixup ratio is ``max(r, 1 - r)``
            with ``r ~ Beta(alpha, alpha)`` (big_vision ``utils.get_mixup``).
        ensemble_crops: inception crops averaged by ``fix/ic_ens`` (default
            1,000 as in the paper; computed in batches, memory stays bounded).
        eval_crop_fraction: central-square fraction used by evaluation.
        shuffle_buffer: shuffle buffer of the train pipeline (0: no shuffling).
        t2_scaling: multiply the KL by T**2 (default; see ``losses.py``).
        antialias: render train views with antialiased bilinear instead of
            big_vision's resampling (plain bilinear inception crops; see
            :mod:`kdzoo.distill.funmatch.views`).
        ensemble: for a list of teachers, ``"sum"`` (default: the per-teacher
            KLs summed, big_vision ``distill.py``) or ``"mean"`` (one KL to the
            average of their tempered probabilities).
        batched_render: render the train views per batch where that gives the
            same views (bilinear crops of images of one static size; see
            :meth:`kdzoo.distill.funmatch.views.ViewMaker.can_render_batched`),
            else per image. Off by default: at the Fashion-MNIST study's 28 px it
            measured no gain (rendering is not where that stream's CPU goes:
            docs/speed.md), and off keeps runs bit-identical to earlier kdzoo.
    """

    def __init__(self, teacher, student, variant="funmatch", temperature=1.0,
                 image_size=224, teacher_image_size=None, seed=0, flip=True,
                 crop_fraction=augment.CROP_FRACTION,
                 inception_area_range=augment.INCEPTION_AREA_RANGE, mixup_alpha=1.0,
                 ensemble_crops=1000, eval_crop_fraction=1.0, shuffle_buffer=10_000,
                 t2_scaling=True, antialias=False, ensemble="sum", batched_render=False,
                 name="funmatch_distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        check_variant(variant)
        teachers = list(teacher) if isinstance(teacher, (list, tuple)) else [teacher]
        if not teachers:
            raise ValueError("teacher must be a keras.Model or a non-empty list of them.")
        for t in teachers:
            if not isinstance(t, keras.Model):
                raise TypeError(f"teacher must be a keras.Model (or a list of them), got "
                                f"{type(t).__name__}.")
        if not isinstance(student, keras.Model):
            raise TypeError(f"student must be a keras.Model, got {type(student).__name__}.")
        for t in teachers:  # issue 15: logits, not probabilities
            check_outputs_logits(t, "teacher")
        check_outputs_logits(student, "student")
        temperature = check_number(temperature, "temperature", minimum=0.0, strict=True,
                                   hint=" T of the tempered softmax, e.g. temperature=10.0.")
        num_classes = _num_classes(student, "student")
        for t in teachers:
            k = _num_classes(t, "teacher")
            if k != num_classes:
                raise ValueError(
                    f"Teacher {t.name!r} predicts {k} classes but the student "
                    f"{student.name!r} predicts {num_classes}: teacher and student must "
                    "share one label space for function matching.")
        image_size = check_size(image_size, "image_size")
        teacher_image_size = (image_size if teacher_image_size is None
                              else check_size(teacher_image_size, "teacher_image_size"))
        self._check_input(student, "student", image_size, "image_size")
        channels = {_static_size(student)[-1]}
        for t in teachers:
            self._check_input(t, "teacher", teacher_image_size, "teacher_image_size")
            channels.add(_static_size(t)[-1])
        channels.discard(None)
        if len(channels) > 1:
            raise ValueError(f"Teacher and student expect different channel counts "
                             f"{sorted(channels)}; build both with the same input_shape "
                             "channels (e.g. kdzoo.load(..., input_shape=(H, W, C))).")
        self.num_classes = num_classes
        self.channels = channels.pop() if channels else None
        for t in teachers:
            t.trainable = False
        self.teachers = teachers
        self._teacher_is_list = isinstance(teacher, (list, tuple))
        self.student = student
        self.variant = variant
        self.temperature = float(temperature)
        self.t2_scaling = bool(t2_scaling)
        self.ensemble = losses.check_ensemble(ensemble)
        self.shuffle_buffer = int(check_number(
            shuffle_buffer, "shuffle_buffer", minimum=0,
            hint=" It is the train pipeline's shuffle buffer in images; 0 turns shuffling "
                 "off."))
        self.views = ViewMaker(
            variant, image_size, teacher_image_size, seed=seed, flip=flip,
            crop_fraction=crop_fraction, inception_area_range=inception_area_range,
            mixup_alpha=mixup_alpha, ensemble_crops=ensemble_crops,
            eval_crop_fraction=eval_crop_fraction, antialias=antialias,
            batched_render=batched_render)
        # Online teacher, fixed targets or teacher cache: the one owner of that state.
        self.target_source = TargetSource(self)
        self.train_steps_per_epoch = None  # set by make_train_dataset
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.agreement_tracker = keras.metrics.Mean(name="agreement")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.teacher_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="teacher_accuracy")
        self.built = True

    # -- configuration ----------------------------------------------------------
    @staticmethod
    def _check_input(model, role, size, arg):
        shape = _static_size(model)
        if len(shape) != 4:
            raise ValueError(f"The {role} {model.name!r} must take images [batch, height, "
                             f"width, channels]; its input shape is {shape}.")
        for dim in shape[1:3]:
            if dim is not None and dim != size:
                raise ValueError(f"The {role} {model.name!r} takes {shape[1]}x{shape[2]} "
                                 f"images but {arg}={size}; pass {arg}={dim}.")

    @property
    def teacher(self):
        return list(self.teachers) if self._teacher_is_list else self.teachers[0]

    @property
    def image_size(self):
        return self.views.image_size

    @property
    def teacher_image_size(self):
        return self.views.teacher_image_size

    @property
    def seed(self):
        return self.views.seed

    def get_config(self):
        v = self.views
        teacher = [keras.saving.serialize_keras_object(t) for t in self.teachers]
        return {
            "name": self.name,
            "teacher": teacher if self._teacher_is_list else teacher[0],
            "student": keras.saving.serialize_keras_object(self.student),
            "variant": self.variant, "temperature": self.temperature,
            "image_size": v.image_size, "teacher_image_size": v.teacher_image_size,
            "seed": v.seed, "flip": v.flip, "crop_fraction": v.crop_fraction,
            "inception_area_range": list(v.inception_area_range),
            "mixup_alpha": v.mixup_alpha, "ensemble_crops": v.ensemble_crops,
            "eval_crop_fraction": v.eval_crop_fraction,
            "shuffle_buffer": self.shuffle_buffer, "t2_scaling": self.t2_scaling,
            "antialias": v.antialias, "ensemble": self.ensemble,
            "batched_render": v.batched_render,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        teacher = config.pop("teacher")
        if isinstance(teacher, list):
            teacher = [keras.saving.deserialize_keras_object(t) for t in teacher]
        else:
            teacher = keras.saving.deserialize_keras_object(teacher)
        student = keras.saving.deserialize_keras_object(config.pop("student"))
        return cls(teacher=teacher, student=student, **config)

    @property
    def metrics(self):
        # with_directions: so ModelCheckpoint/EarlyStopping mode="auto" maximise these.
        return with_directions([self.loss_tracker, self.agreement_tracker,
                                self.accuracy_tracker, self.teacher_accuracy_tracker],
                               up=("agreement",))

    def compile(self, optimizer="adam", **kwargs):
        """Keras ``compile`` without a ``loss``: the distillation loss is built in."""
        if kwargs.get("loss") is not None:
            raise ValueError("FunMatchDistiller has its own loss (KL at temperature T); "
                             "do not pass loss= to compile.")
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, **kwargs)

    # -- model ------------------------------------------------------------------
    def call(self, inputs, training=False):
        """The student on a view (or a dict of views: its ``"student"`` entry)."""
        if isinstance(inputs, dict):
            inputs = inputs["student"]
        return self.student(inputs, training=training)

    def export_network(self):
        """The deployable network: the student (the teacher only trains it).

        Why a method: :func:`kdzoo.to_plain_keras` asks the model which network is the
        deployable one rather than testing its class, so each method answers in its
        own file.
        """
        return self.student

    def teacher_probs(self, images):
        """Tempered teacher probabilities ``[B, K]`` (ensemble average), no gradient."""
        return losses.mean_probs(self.teacher_member_probs(images))

    def teacher_member_probs(self, images):
        """Each teacher's tempered probabilities: ``[B, K]``, or ``[B, M, K]`` for a list.

        What the loss reads (:func:`kdzoo.distill.losses.distill_per_example`).
        """
        return self.tempered_targets([t(images, training=False) for t in self.teachers])

    def tempered_targets(self, member_logits):
        """Targets at this distiller's T from each teacher's logits (a list, one per teacher).

        Split from :meth:`teacher_member_probs` so that grid points with their own T can
        share one teacher pass (:class:`kdzoo.distill.funmatch.lockstep.LockstepGrid`).
        """
        probs = [losses.tempered_probs(z, self.temperature) for z in member_logits]
        probs = probs[0] if len(probs) == 1 else ops.stack(probs, axis=1)
        return ops.stop_gradient(probs)

    def distill_loss(self, targets, logits):
        """Batch mean of the distillation loss (ensembles: see ``ensemble``)."""
        return ops.mean(losses.distill_per_example(targets, logits, self.temperature,
                                                   self.t2_scaling, self.ensemble))

    # -- steps ------------------------------------------------------------------
    def train_step(self, data):
        if not isinstance(data, dict) or "student" not in data:
            raise ValueError(
                "FunMatchDistiller.train_step expects batches of views made by "
                "make_train_dataset(); pass raw images to fit() and it builds them, or "
                "call d.make_train_dataset(images, batch_size) yourself.")
        return self.student_update(data["student"], self.target_source.batch_targets(data))

    def student_update(self, student_view, targets):
        """One optimizer step of the student towards ``targets``; the step's logs."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.student(student_view, training=True)
            loss = self.distill_loss(targets, logits)
            total = loss
            if self.student.losses:
                total = total + ops.cast(ops.sum(self.student.losses), "float32")
            # Gradients are summed over replicas: average the loss over them.
            scaled = self.optimizer.scale_loss(total / replicas)
        grads = tape.gradient(scaled, variables)
        apply_with_global_clip(self.optimizer, grads, variables)  # clip the whole-batch norm
        self.loss_tracker.update_state(loss)
        self.agreement_tracker.update_state(
            losses.agreement(logits, losses.mean_probs(targets)))
        return {"loss": self.loss_tracker.result(),
                "agreement": self.agreement_tracker.result()}

    def _eval_views(self, images):
        if isinstance(images, dict):
            return images["student"], images.get("teacher", images["student"])
        images = tf.convert_to_tensor(images)
        if images.shape.rank != 4:
            raise ValueError(
                f"Evaluation images must be batched [batch, height, width, channels]; got "
                f"rank {images.shape.rank} (shape {images.shape}). Batch your validation "
                "dataset, or use d.make_eval_dataset(...) for variable-size images.")
        if not (images.dtype.is_integer or images.dtype.is_floating):
            raise ValueError(f"Evaluation images must be raw pixels (uint8 or float in "
                             f"[0, 255]); got dtype {images.dtype.name}.")
        if self.channels is not None and images.shape[-1] not in (None, self.channels):
            raise ValueError(f"Images have {images.shape[-1]} channels; the models take "
                             f"{self.channels}.")
        hw = tf.shape(images)[1:3]
        side = tf.maximum(1, tf.cast(tf.round(self.views.eval_crop_fraction * tf.cast(
            tf.reduce_min(hw), tf.float32)), tf.int32))
        static_hw = images.shape[1:3]
        square = static_hw[0] is not None and static_hw[0] == static_hw[1]
        x = tf.cast(images, tf.float32)
        if not (square and self.views.eval_crop_fraction == 1.0):
            x = x[:, (hw[0] - side) // 2:(hw[0] - side) // 2 + side,
                  (hw[1] - side) // 2:(hw[1] - side) // 2 + side, :]

        def at(size):
            if square and static_hw[0] == size and self.views.eval_crop_fraction == 1.0:
                return x
            # XLA has no antialiased resize: under jit_compile the step resizes with
            # plain bilinear; make_eval_dataset renders antialiased views in tf.data.
            return tf.image.resize(x, [size, size], method="bilinear",
                                   antialias=not self.jit_compile)

        s = at(self.views.image_size)
        t = s if self.teacher_image_size == self.image_size else at(self.teacher_image_size)
        return s, t

    def test_step(self, data):
        if isinstance(data, (tuple, list)):
            images, labels = data[0], (data[1] if len(data) > 1 else None)
        else:
            images, labels = data, None
        student_view, teacher_view = self._eval_views(images)
        logits = self.student(student_view, training=False)
        members = self.teacher_member_probs(teacher_view)
        targets = losses.mean_probs(members)
        self.loss_tracker.update_state(self.distill_loss(members, logits))
        self.agreement_tracker.update_state(losses.agreement(logits, targets))
        if labels is not None:
            labels = ops.convert_to_tensor(labels)
            if len(labels.shape) == 2 and labels.shape[-1] == self.num_classes:
                labels = ops.argmax(labels, axis=-1)  # one-hot
            elif len(labels.shape) > 2 or (len(labels.shape) == 2
                                           and labels.shape[-1] not in (None, 1)):
                raise ValueError(
                    f"Labels must be class ids of shape [batch] or one-hot of shape "
                    f"[batch, {self.num_classes}]; got shape {tuple(labels.shape)}.")
            labels = ops.reshape(labels, (-1,))
            self.accuracy_tracker.update_state(labels, logits)
            self.teacher_accuracy_tracker.update_state(labels, targets)
        return {m.name: m.result() for m in self.metrics}

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        student_view, _ = self._eval_views(images)
        return self.student(student_view, training=False)
