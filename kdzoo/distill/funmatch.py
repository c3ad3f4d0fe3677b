"""Consistent and patient teaching (Beyer et al., CVPR 2022): ``FunMatchDistiller``.

A frozen teacher (one model, or a list whose tempered probabilities are
averaged) and a student; the loss is ``KL(teacher_T || student_T)`` from
:mod:`kdzoo.distill.losses` (scaled by T**2 by default: see there), and
ground-truth labels are never used by it. ``variant`` picks one of the
paper's eight ways of teaching (:data:`kdzoo.distill.views.VARIANTS`).

Data path
---------
Augmentation runs per image inside ``tf.data`` (so images of different sizes
work before batching), keyed by ``(seed, epoch, image index)``; mixup runs
per batch keyed by ``(seed, epoch, step)``. :meth:`FunMatchDistiller.fit`
does this for you: give it raw uint8 images, as a ``tf.data.Dataset`` of
``image`` or ``(image, label)`` elements (unbatched, any sizes; or batched,
which is unbatched first) or a NumPy array ``[N, H, W, C]``, plus
``batch_size`` (default 32). It calls :meth:`make_train_dataset`, which
returns an endless dataset of batched views, epoch after epoch (epoch ``e``
keyed by ``e``; ``initial_epoch`` resumes the exact stream), and fits with
``steps_per_epoch = N // batch_size`` (the last partial batch of an epoch is
dropped so every step sees a full batch, as MirroredStrategy and XLA like).

Fixed teachers (``fix/*``)
--------------------------
The teacher's targets are computed once per training image by
:meth:`prepare_targets`: it walks the finite dataset in order, renders the
fixed teacher views (``fix/rs``: whole image; ``fix/cc``: central crop;
``fix/ic_ens``: ``ensemble_crops`` inception crops whose tempered
probabilities are averaged), runs the teacher and stores a float32 array
``[N, num_classes]`` of tempered probabilities (``d.fixed_targets``).
:meth:`make_train_dataset` zips that array, row ``i`` with image ``i``, into
the pipeline *before* shuffling, so every epoch's batches carry their targets
and ``train_step`` never calls the teacher. ``fit`` prepares the targets
automatically the first time it sees a dataset object (and reuses them while
it is given the same object, and the temperature is unchanged); call
``prepare_targets`` yourself to pay that cost up front, or assign
``d.fixed_targets`` / ``d.fixed_targets_source`` to reuse an array you saved.
The array lives in host memory and is embedded in the ``tf.data`` graph, so
it should stay below 2 GB (ImageNet-1k at 1000 classes needs float16 or shards).

Cached teachers
---------------
For the per-view variants the teacher's outputs on the exact views of epochs
``[a, b)`` can be computed ahead of time with
:func:`kdzoo.distill.cache_teacher` (another process or machine) and used with
:meth:`FunMatchDistiller.use_teacher_cache`: ``make_train_dataset`` then zips
the cached tempered targets (``"targets"``) into the stream, in order, and
``train_step`` never runs the teacher. See :mod:`kdzoo.distill.teacher_cache`
for the format and the checks.

Evaluation
----------
``evaluate`` / ``validation_data`` take batched ``(images, labels)``: the
largest central square (``eval_crop_fraction``) resized to each model's size,
in the step (antialiased, except under ``jit_compile=True``, where XLA only
has plain bilinear resizing). For variable-size validation images, or
antialiased views under XLA, use :meth:`make_eval_dataset`. Metrics: ``loss`` (the distillation KL),
``accuracy`` (student top-1), ``agreement`` (student/teacher top-1
agreement) and ``teacher_accuracy``.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kdzoo.callbacks import with_directions
from kdzoo.data import augment
from kdzoo.distill import losses
from kdzoo.distill.gradients import apply_with_global_clip
from kdzoo.distill.views import (VARIANTS, ViewMaker, check_number, check_size, check_variant,
                                 is_fixed)

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
class FunMatchDistiller(keras.Model):
    """Distil a frozen ``teacher`` into ``student`` by function matching.

    Args:
        teacher: a ``keras.Model`` returning logits, or a list of them (an
            ensemble: the average of their tempered probabilities). Frozen:
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
        mixup_alpha: Beta(alpha, alpha) ratio of ``funmatch``'s batch mixup.
        ensemble_crops: inception crops averaged by ``fix/ic_ens``.
        eval_crop_fraction: central-square fraction used by evaluation.
        shuffle_buffer: shuffle buffer of the train pipeline (0: no shuffling).
        t2_scaling: multiply the KL by T**2 (default; see ``losses.py``).
    """

    def __init__(self, teacher, student, variant="funmatch", temperature=1.0,
                 image_size=224, teacher_image_size=None, seed=0, flip=True,
                 crop_fraction=augment.CROP_FRACTION,
                 inception_area_range=augment.INCEPTION_AREA_RANGE, mixup_alpha=1.0,
                 ensemble_crops=32, eval_crop_fraction=1.0, shuffle_buffer=10_000,
                 t2_scaling=True, name="funmatch_distiller", **kwargs):
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
        self.shuffle_buffer = int(check_number(
            shuffle_buffer, "shuffle_buffer", minimum=0,
            hint=" It is the train pipeline's shuffle buffer in images; 0 turns shuffling "
                 "off."))
        self.views = ViewMaker(
            variant, image_size, teacher_image_size, seed=seed, flip=flip,
            crop_fraction=crop_fraction, inception_area_range=inception_area_range,
            mixup_alpha=mixup_alpha, ensemble_crops=ensemble_crops,
            eval_crop_fraction=eval_crop_fraction)
        self.fixed_targets = None          # fix/*: float32 [N, num_classes]
        self.fixed_targets_source = None   # the object they were computed from
        self._fixed_targets_temperature = None
        self.train_steps_per_epoch = None  # set by make_train_dataset
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.agreement_tracker = keras.metrics.Mean(name="agreement")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.teacher_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(
            name="teacher_accuracy")
        self._teacher_fn = None
        self.teacher_cache = None  # a TeacherCache: see use_teacher_cache
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

    def teacher_probs(self, images):
        """Tempered teacher probabilities (ensemble average), no gradient."""
        probs = [losses.tempered_probs(t(images, training=False), self.temperature)
                 for t in self.teachers]
        probs = probs[0] if len(probs) == 1 else ops.mean(ops.stack(probs, axis=0), axis=0)
        return ops.stop_gradient(probs)

    # -- steps ------------------------------------------------------------------
    def train_step(self, data):
        if not isinstance(data, dict) or "student" not in data:
            raise ValueError(
                "FunMatchDistiller.train_step expects batches of views made by "
                "make_train_dataset(); pass raw images to fit() and it builds them, or "
                "call d.make_train_dataset(images, batch_size) yourself.")
        student_view = data["student"]
        if "targets" in data:
            targets = ops.cast(data["targets"], "float32")
        else:
            targets = self.teacher_probs(data.get("teacher", student_view))
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.student(student_view, training=True)
            loss = ops.mean(losses.kl_per_example(targets, logits, self.temperature,
                                                  self.t2_scaling))
            total = loss
            if self.student.losses:
                total = total + ops.cast(ops.sum(self.student.losses), "float32")
            # Gradients are summed over replicas: average the loss over them.
            scaled = self.optimizer.scale_loss(total / replicas)
        grads = tape.gradient(scaled, variables)
        apply_with_global_clip(self.optimizer, grads, variables)  # clip the whole-batch norm
        self.loss_tracker.update_state(loss)
        self.agreement_tracker.update_state(losses.agreement(logits, targets))
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
        targets = self.teacher_probs(teacher_view)
        loss = ops.mean(losses.kl_per_example(targets, logits, self.temperature,
                                              self.t2_scaling))
        self.loss_tracker.update_state(loss)
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

    # -- teacher-output cache -------------------------------------------------------
    def use_teacher_cache(self, cache, verify=True):
        """Train from a teacher-output cache (:mod:`kdzoo.distill.teacher_cache`).

        ``cache``: a path written by :func:`kdzoo.distill.cache_teacher`, an
        opened ``TeacherCache``, or None to go back to the online teacher. The
        file is checked (size, end marker, header and, with ``verify``, every
        epoch's sha256) and must match this distiller's teacher weights,
        variant and view settings; the batch size, number of images and epochs
        are checked when the train stream is built. While a cache is in use,
        train batches carry ``"targets"`` read from it and ``train_step``
        never runs the teacher (evaluation still does). Returns the cache.
        """
        if cache is None:
            self.teacher_cache = None
            return None
        from kdzoo.distill.teacher_cache import TeacherCache, open_teacher_cache

        if not isinstance(cache, TeacherCache):
            cache = open_teacher_cache(cache, verify=verify)
        cache.check_distiller(self)
        self.teacher_cache = cache
        return cache

    # -- data -------------------------------------------------------------------
    def _image_dataset(self, images):
        """A dataset of single raw images ``[H, W, C]`` (uint8), from what the user gave."""
        if isinstance(images, np.ndarray) or tf.is_tensor(images):
            images = tf.data.Dataset.from_tensor_slices(images)
        if not isinstance(images, tf.data.Dataset):
            raise TypeError("Train images must be a tf.data.Dataset or an array "
                            f"[N, H, W, C]; got {type(images).__name__}.")
        spec = images.element_spec
        if isinstance(spec, (tuple, list)):
            images = images.map(lambda *e: e[0])  # (images, labels[, ...]): labels unused
            spec = images.element_spec
        elif isinstance(spec, dict):
            if "image" not in spec:
                raise ValueError(f"Dict elements need an 'image' entry; got keys {list(spec)}.")
            images = images.map(lambda e: e["image"])
            spec = images.element_spec
        if not isinstance(spec, tf.TensorSpec):
            raise ValueError(f"Train elements must be images; got {spec}.")
        if spec.dtype != tf.uint8:
            raise ValueError(
                f"Train images must be raw uint8 pixels; got dtype {spec.dtype.name}. "
                "Pass the undecoded-range images (e.g. tf.cast(x, tf.uint8)); the "
                "distiller renders float views itself.")
        if spec.shape.rank == 4:
            images = images.unbatch()
        elif spec.shape.rank != 3:
            raise ValueError(
                f"Train images must have rank 3 [H, W, C] (or rank 4 when batched); got "
                f"shape {spec.shape}. Grayscale images need a channel axis: x[..., None].")
        channels = images.element_spec.shape[-1]
        if self.channels is not None and channels is not None and channels != self.channels:
            raise ValueError(f"Train images have {channels} channels; the models take "
                             f"{self.channels}.")
        height, width = images.element_spec.shape[:2]
        if height is not None and width is not None and min(height, width) < self.image_size:
            raise ValueError(
                f"Train images are {height}x{width}, smaller than the crop size "
                f"image_size={self.image_size}. Use larger images or a smaller image_size.")
        return images

    @staticmethod
    def _count(dataset):
        """Number of elements; a dataset of unknown cardinality is read through once."""
        n = int(dataset.cardinality())
        if n == tf.data.INFINITE_CARDINALITY:
            return None
        if n == tf.data.UNKNOWN_CARDINALITY:
            n = int(dataset.reduce(np.int64(0), lambda c, _: c + 1))
        return n

    def _teacher_predict(self, views):
        if self._teacher_fn is None:
            self._teacher_fn = tf.function(self.teacher_probs, reduce_retracing=True)
        return self._teacher_fn(views)

    def prepare_targets(self, images, batch_size=64):
        """``fix/*``: compute the teacher's fixed targets once, for every image, in order.

        Returns (and stores in ``self.fixed_targets``) a float32 array
        ``[N, num_classes]`` of tempered teacher probabilities: row ``i`` for the
        ``i``-th image of ``images``. ``batch_size`` is the teacher's batch in
        views: ``fix/ic_ens`` renders ``ensemble_crops`` views per image, so it
        takes ``max(1, batch_size // ensemble_crops)`` images per teacher call.
        The teacher runs here and nowhere else in ``fix/*`` training.
        """
        if not is_fixed(self.variant):
            raise ValueError(f"Variant {self.variant!r} has no fixed targets; only "
                             "fix/rs, fix/cc and fix/ic_ens do.")
        dataset = self._image_dataset(images)
        n = self._count(dataset)
        if n is None:
            raise ValueError(f"{self.variant} needs a finite train dataset: its targets "
                             "are computed once per image.")
        crops = self.views.ensemble_crops if self.variant == "fix/ic_ens" else 1
        per_batch = max(1, int(batch_size) // crops) if crops > 1 else int(batch_size)
        views = dataset.enumerate().map(
            lambda i, img: self.views.target_views(img, i), num_parallel_calls=_AUTOTUNE,
            deterministic=True).batch(per_batch).prefetch(_AUTOTUNE)
        out = []
        for batch in views:
            b = int(batch.shape[0])
            flat = tf.reshape(batch, [b * crops] + batch.shape[2:].as_list())
            probs = ops.convert_to_numpy(self._teacher_predict(flat))
            out.append(probs.reshape(b, crops, -1).mean(axis=1))
        targets = np.concatenate(out, axis=0).astype(np.float32)
        if targets.shape[0] != n:
            raise RuntimeError(f"Prepared {targets.shape[0]} targets for {n} images.")
        self.fixed_targets = targets
        self.fixed_targets_source = images
        self._fixed_targets_temperature = self.temperature
        return targets

    def make_train_dataset(self, images, batch_size=32, initial_epoch=0, shuffle=True,
                           num_images=None):
        """Raw images -> an endless ``tf.data`` stream of batched train views.

        ``images``: a dataset of ``image`` / ``(image, label, ...)`` elements
        (uint8 ``[H, W, C]`` of any size >= ``image_size``; batched datasets are
        unbatched), or an array ``[N, H, W, C]``. Each epoch ``e`` (from
        ``initial_epoch`` on) shuffles with a seed derived from ``(seed, e)``,
        renders the variant's views per image keyed by ``(seed, e, index)``,
        batches (dropping the remainder) and applies batch-level views (mixup)
        keyed by ``(seed, e, step)``. Elements are dicts: ``"student"``
        ``[B, S, S, C]`` float32, plus ``"teacher"`` ``[B, T, T, C]`` when the
        teacher's view differs, or ``"targets"`` ``[B, K]`` for ``fix/*``.

        Sets ``self.train_steps_per_epoch`` (= N // batch_size), which ``fit``
        uses when given this dataset without ``steps_per_epoch``. N is
        ``num_images`` if given, else the dataset's cardinality; a dataset of
        unknown cardinality is counted (read through once) only for ``fix/*``,
        otherwise N stays unknown and ``fit`` needs ``steps_per_epoch``. One
        pass over the data is one epoch of the key stream; an infinite dataset
        is a single endless epoch ``initial_epoch``.
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        dataset = self._image_dataset(images)
        if num_images is not None:
            n = int(num_images)
        else:
            n = int(dataset.cardinality())
            if n == tf.data.UNKNOWN_CARDINALITY and self.views.fixed:
                n = self._count(dataset)
            elif n < 0:
                n = None
        if n is not None and n < batch_size:
            raise ValueError(f"The train dataset has {n} images, fewer than one batch "
                             f"of {batch_size}; use batch_size <= {n} or more images.")
        views = self.views
        if views.fixed:
            if n is None:
                raise ValueError(f"{self.variant} needs a finite train dataset: its "
                                 "targets are computed once per image.")
            if (self.fixed_targets is None or self.fixed_targets_source is not images
                    or self._fixed_targets_temperature != self.temperature
                    or len(self.fixed_targets) != n):
                self.prepare_targets(images)
            targets = tf.data.Dataset.from_tensor_slices(self.fixed_targets)
            base = tf.data.Dataset.zip((dataset.enumerate(), targets)).map(
                lambda ii, t: (ii[0], ii[1], t))
        else:
            base = dataset.enumerate().map(lambda i, img: (i, img, tf.zeros([0])))
        buffer = min(self.shuffle_buffer, n) if n is not None else self.shuffle_buffer
        shuffle = bool(shuffle) and buffer > 1
        fixed = views.fixed

        def per_image(epoch):
            def fn(index, image, target):
                out = views.train_views(image, index, epoch)
                if fixed:
                    out.pop("index")
                    out["targets"] = target
                return out
            return fn

        def one_epoch(epoch):
            ds = base
            if shuffle:
                shuffle_seed = augment.make_key(views.seed, augment.SHUFFLE, epoch)[0]
                # tf.data pairs an op seed with the graph's global seed; pin the latter
                # (in this traced function only) so the order depends on (seed, epoch)
                # alone, never on tf.random.set_seed / keras.utils.set_random_seed.
                graph = tf.compat.v1.get_default_graph()
                global_seed = graph.seed
                graph.seed = 1
                try:
                    ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
                finally:
                    graph.seed = global_seed
            ds = ds.map(per_image(epoch), num_parallel_calls=_AUTOTUNE, deterministic=True)
            ds = ds.batch(batch_size, drop_remainder=True)
            return ds.enumerate().map(lambda step, b: views.batch_views(b, epoch, step),
                                      num_parallel_calls=_AUTOTUNE, deterministic=True)

        stream = tf.data.Dataset.counter(start=int(initial_epoch)).flat_map(one_epoch)
        if self.teacher_cache is not None:  # cached teacher outputs replace the teacher
            cache = self.teacher_cache
            cache.check_stream(batch_size, n, buffer, shuffle, initial_epoch, images)
            stream = tf.data.Dataset.zip(
                (stream, cache.dataset(initial_epoch, self.temperature))).map(
                lambda b, t: {"student": b["student"], "targets": t})
        self.train_steps_per_epoch = None if n is None else n // batch_size
        return stream.prefetch(_AUTOTUNE)

    def make_eval_dataset(self, dataset, batch_size=32):
        """``(image, label)`` elements of any size -> batched ``(views, labels)`` for evaluate."""
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError("make_eval_dataset takes a tf.data.Dataset of (image, label); "
                            f"got {type(dataset).__name__}. Wrap arrays with "
                            "tf.data.Dataset.from_tensor_slices((images, labels)).")
        batch_size = int(check_number(batch_size, "batch_size", minimum=1))
        spec = dataset.element_spec
        if not isinstance(spec, (tuple, list)) or len(spec) < 2:
            raise ValueError(f"Eval elements must be (image, label); got {spec}.")
        if spec[0].shape.rank == 4:
            dataset = dataset.unbatch()
        elif spec[0].shape.rank != 3:
            raise ValueError(f"Eval images must have rank 3 (or 4 when batched); got "
                             f"shape {spec[0].shape}.")
        return dataset.map(lambda img, label, *_: (self.views.eval_views(img), label),
                           num_parallel_calls=_AUTOTUNE, deterministic=True
                           ).batch(int(batch_size)).prefetch(_AUTOTUNE)

    # -- fit ----------------------------------------------------------------------
    def _is_views(self, x):
        return (isinstance(x, tf.data.Dataset) and isinstance(x.element_spec, dict)
                and "student" in x.element_spec)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, steps_per_epoch=None,
            initial_epoch=0, **kwargs):
        """Keras ``fit`` on raw images (see the module docstring); ``y`` is ignored.

        ``batch_size`` (default 32) batches the views of raw inputs; a dataset
        from :meth:`make_train_dataset` is used as is.
        """
        if kwargs.get("validation_split"):
            raise ValueError("validation_split is not supported; pass validation_data.")
        if x is None:
            raise ValueError("fit needs training images.")
        if not self._is_views(x):
            raw = x
            x = self.make_train_dataset(raw, batch_size=batch_size or 32,
                                        initial_epoch=initial_epoch)
            if steps_per_epoch is None and self.train_steps_per_epoch is None:
                n = self._count(self._image_dataset(raw))  # unknown cardinality: count
                if n is not None:
                    x = self.make_train_dataset(raw, batch_size=batch_size or 32,
                                                initial_epoch=initial_epoch, num_images=n)
        if steps_per_epoch is None:
            steps_per_epoch = self.train_steps_per_epoch
            if steps_per_epoch is None:
                raise ValueError("The train stream is endless: pass steps_per_epoch.")
        if self.teacher_cache is not None:
            self.teacher_cache.check_epochs(initial_epoch, epochs)
        kwargs["shuffle"] = False  # the view pipeline shuffles, seeded, per epoch
        return super().fit(x, None, epochs=epochs, steps_per_epoch=steps_per_epoch,
                           initial_epoch=initial_epoch, **kwargs)
