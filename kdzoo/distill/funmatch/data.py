"""The data side of :class:`kdzoo.distill.funmatch.FunMatchDistiller` (a mixin).

Kept apart from the train/test steps so each file holds one idea: this one is how
images become the student's (and teacher's) batches.

Data path
---------
:meth:`FunMatchDistiller.fit` takes raw uint8 images (an array ``[N, H, W, C]``
or a ``tf.data.Dataset`` of ``image`` / ``(image, label)`` elements of any size,
batched or not) and ``batch_size``; :meth:`make_train_dataset` turns them into
the one deterministic stream of :mod:`kdzoo.data.stream` (epochs back to back,
no image dropped, per-image views keyed by ``(seed, epoch, index)``, mixup by
``(seed, step)``). ``fit`` runs ``steps_per_epoch = N // batch_size`` per Keras
epoch by default; ``initial_epoch`` (or a ``keras.callbacks.BackupAndRestore``
backup) resumes the exact stream.

Fixed teachers (``fix/*``)
--------------------------
The teacher's targets are computed once per training image by
:meth:`prepare_targets`: it walks the finite dataset in order, renders the
fixed teacher views (``fix/rs``: whole image; ``fix/cc``: central crop;
``fix/ic_ens``: ``ensemble_crops`` (by default the paper's 1,000) inception
crops whose tempered probabilities are averaged), runs the teacher on them in
batches of bounded size (:mod:`kdzoo.distill.funmatch.fixed_targets`) and stores a
float32 array ``[N, num_classes]`` of tempered probabilities
(``[N, teachers, num_classes]`` for an ensemble) in ``d.fixed_targets``.
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
``train_step`` never runs the teacher. See :mod:`kdzoo.distill.funmatch.teacher_cache`
for the format and the checks.
"""

import functools

import tensorflow as tf

from kdzoo.data import stream
from kdzoo.distill._checks import arrays_dataset
from kdzoo.distill.funmatch.views import check_number

_AUTOTUNE = tf.data.AUTOTUNE


_LABELS_IGNORED = (
    "FunMatchDistiller.fit ignores labels: function matching learns from the teacher "
    "alone (Beyer et al. 2022). To train on labels use the 'labels' or 'mixup' "
    "baselines (kdzoo.train.SupervisedRun(method=\"labels\", mixup_alpha=...)), or "
    "keras.distillation.Distiller, whose student loss uses them. Pass images only to "
    "silence this.")


def _warn_if_labels(x, y):
    """Warn once per call site when labels reach the label-free ``fit``."""
    import warnings
    spec = x.element_spec if isinstance(x, tf.data.Dataset) else None
    dataset_labels = isinstance(spec, (tuple, list)) and len(spec) > 1
    if y is not None or dataset_labels:
        # fit -> CheckedInputs.fit -> _fit_arguments -> here: point at fit's caller.
        warnings.warn(_LABELS_IGNORED, UserWarning, stacklevel=5)


def _eval_source(data):
    """A dataset of ``(image, label)`` from a dataset or an ``(images, labels)`` tuple."""
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return arrays_dataset(*data, "make_eval_dataset")
    raise TypeError("make_eval_dataset takes a tf.data.Dataset of (image, label) or a tuple "
                    f"(images, labels) of arrays; got {type(data).__name__}. Pass (images, "
                    "labels): evaluation needs the labels for accuracy.")


def eval_views(image, sizes, resize_small):
    """The authors' eval views ``resize_small(R)|central_crop(S)``; teacher at T: R * T / S."""
    from kdzoo.data.pipeline import eval_preprocess
    student, teacher = sizes
    out = {"student": eval_preprocess(image, student, resize_small)}
    if teacher != student:
        out["teacher"] = eval_preprocess(image, teacher, round(resize_small * teacher / student))
    return out



class FunMatchData:
    """Train stream, fixed targets, teacher caches, eval datasets and ``fit``."""

    # -- targets (held by self.target_source, a TargetSource) -------------------
    @property
    def teacher_cache(self):
        """The teacher cache in use (read-only: set it with :meth:`use_teacher_cache`)."""
        return self.target_source.cache

    @property
    def fixed_targets(self):
        """``fix/*``: the float32 ``[N, num_classes]`` targets (see ``prepare_targets``)."""
        return self.target_source.fixed_targets

    @fixed_targets.setter
    def fixed_targets(self, value):
        self.target_source.fixed_targets = value

    @property
    def fixed_targets_source(self):
        """The images object ``fixed_targets`` were computed from."""
        return self.target_source.fixed_targets_source

    @fixed_targets_source.setter
    def fixed_targets_source(self, value):
        self.target_source.fixed_targets_source = value

    def use_teacher_cache(self, cache, verify=True):
        """Train from a teacher-output cache (:mod:`kdzoo.distill.funmatch.teacher_cache`).

        ``cache``: a path written by :func:`kdzoo.distill.cache_teacher`, an
        opened ``TeacherCache``, or None to go back to the online teacher. The
        file is checked (size, end marker, header and, with ``verify``, every
        epoch's sha256) and must match this distiller's teacher weights,
        variant and view settings; the batch size, number of images and epochs
        are checked when the train stream is built. While a cache is in use,
        train batches carry ``"targets"`` read from it and ``train_step``
        never runs the teacher (evaluation still does). Returns the cache.
        """
        return self.target_source.use_cache(cache, verify)

    # -- data -------------------------------------------------------------------
    def prepare_targets(self, images, batch_size=64):
        """``fix/*``: compute the teacher's fixed targets once, for every image, in order.

        Returns (and stores in ``self.fixed_targets``) a float32 array
        ``[N, num_classes]`` of tempered teacher probabilities (``[N, M,
        num_classes]`` for ``M`` teachers): row ``i`` for the ``i``-th image of
        ``images``, averaged over its fixed views (``ensemble_crops`` inception
        crops for ``fix/ic_ens``). ``batch_size`` is the teacher's batch in
        views; views are streamed, so memory holds about two such batches
        whatever ``ensemble_crops`` is (:mod:`kdzoo.distill.funmatch.fixed_targets`).
        The teacher runs here and nowhere else in ``fix/*`` training.
        """
        return self.target_source.compute_fixed(images, batch_size)

    def make_train_dataset(self, images, batch_size=32, initial_epoch=0, shuffle=True,
                           num_images=None, initial_step=None, steps_per_epoch=None):
        """Raw images -> an endless ``tf.data`` stream of batched train views.

        ``images``: a dataset of ``image`` / ``(image, label, ...)`` elements
        (uint8 ``[H, W, C]`` of any size >= ``image_size``; batched datasets are
        unbatched), or an array ``[N, H, W, C]``. The stream is
        :func:`kdzoo.data.stream.train_stream`: data epoch ``e`` shuffles
        with a seed derived from ``(seed, e)`` and renders the variant's views
        per image keyed by ``(seed, e, index)``; batches run across epoch
        boundaries (no image is dropped) and batch-level views (mixup) are keyed
        by ``(seed, global step)``. Elements are dicts: ``"student"``
        ``[B, S, S, C]`` float32, plus ``"teacher"`` ``[B, T, T, C]`` when the
        teacher's view differs, or ``"targets"`` ``[B, K]`` for ``fix/*``.

        The stream starts at global step ``initial_step``, or else at
        ``initial_epoch * steps_per_epoch`` (default ``N // batch_size``: the
        Keras epochs ``fit`` runs), so a resumed ``fit`` continues exactly.

        Sets ``self.train_steps_per_epoch`` (= N // batch_size), which ``fit``
        uses when given this dataset without ``steps_per_epoch``. N is
        ``num_images`` if given, else the dataset's cardinality; a dataset of
        unknown cardinality is counted (read through once) only for ``fix/*``,
        otherwise N stays unknown and ``fit`` needs ``steps_per_epoch``.
        """
        fixed = (functools.partial(self.target_source.fixed_for, images)
                 if self.views.fixed else None)
        out, info = stream.funmatch_stream(self, images, int(batch_size), initial_epoch,
                                           shuffle, num_images, initial_step, steps_per_epoch,
                                           fixed_targets=fixed)
        out = self.target_source.with_cache(out, info, images)  # cached outputs, if any
        n = info.num_images
        self.train_steps_per_epoch = None if n is None else n // int(batch_size)
        return out

    def make_eval_dataset(self, dataset, batch_size=32, resize_small=None):
        """``(image, label)`` elements of any size -> batched ``(views, labels)`` for evaluate.

        ``dataset``: a ``tf.data.Dataset`` of ``(image, label)`` (batched or not), or
        a tuple ``(images, labels)`` of arrays, as Keras' own ``evaluate`` takes.

        ``resize_small``: the authors' evaluation, ``resize_small(R)|central_crop(S)``
        (``S = image_size``; e.g. R = 160 at 128 px, 256 at 224 px; see
        :func:`kdzoo.data.eval_preprocess`); a cross-resolution teacher sees the
        same region at its size. ``None``: the central square (``eval_crop_fraction``).
        """
        dataset = _eval_source(dataset)
        batch_size = int(check_number(batch_size, "batch_size", minimum=1))
        spec = dataset.element_spec
        if not isinstance(spec, (tuple, list)) or len(spec) < 2:
            raise ValueError(f"Eval elements must be (image, label); got {spec}.")
        if spec[0].shape.rank == 4:
            dataset = dataset.unbatch()
        elif spec[0].shape.rank != 3:
            raise ValueError(f"Eval images must have rank 3 (or 4 when batched); got "
                             f"shape {spec[0].shape}.")
        views = self.views.eval_views
        if resize_small is not None:
            views = functools.partial(eval_views, sizes=(self.image_size, self.teacher_image_size),
                                      resize_small=int(resize_small))
        return dataset.map(lambda img, label, *_: (views(img), label),
                           num_parallel_calls=_AUTOTUNE, deterministic=True
                           ).batch(int(batch_size)).prefetch(_AUTOTUNE)

    # -- fit ----------------------------------------------------------------------
    def _is_views(self, x):
        return (isinstance(x, tf.data.Dataset) and isinstance(x.element_spec, dict)
                and "student" in x.element_spec)

    def fit(self, x=None, y=None, batch_size=None, epochs=1, steps_per_epoch=None,
            initial_epoch=0, stop_on_non_finite_loss=True, **kwargs):
        """Keras ``fit`` on raw images (see the module docstring); labels are ignored (warned).

        ``batch_size`` (default 32) batches the views of raw inputs; a dataset
        from :meth:`make_train_dataset` is used as is. A NaN/Inf loss stops
        training with :class:`kdzoo.train.checkpointing.NonFiniteLossError` naming the
        epoch and step, before any callback can save the broken weights;
        ``stop_on_non_finite_loss=False`` turns that off. The guards (callbacks,
        ``validation_data``, input errors) are ``CheckedInputs.fit``'s; the views
        are built in :meth:`_fit_arguments`.
        """
        return super().fit(x, y, batch_size=batch_size, epochs=epochs,
                           steps_per_epoch=steps_per_epoch, initial_epoch=initial_epoch,
                           stop_on_non_finite_loss=stop_on_non_finite_loss, **kwargs)

    def _checked_fit_data(self, x, y, where):
        # Raw images are checked where they become views (kdzoo.data.stream); labels
        # are not used, so they are not checked either (only warned about).
        return x, y

    def _fit_arguments(self, x, y, args, kwargs):
        """Raw images -> the view stream, the steps per epoch and the cache's range checks."""
        batch_size = kwargs.pop("batch_size")
        epochs, initial_epoch = kwargs.pop("epochs"), kwargs.pop("initial_epoch")
        steps_per_epoch = kwargs.pop("steps_per_epoch")
        if kwargs.get("validation_split"):
            raise ValueError("validation_split is not supported; pass validation_data.")
        if x is None:
            raise ValueError("fit needs training images.")
        _warn_if_labels(x, y)
        built_here = not self._is_views(x)
        if built_here:
            raw = x
            # keras.callbacks.BackupAndRestore restores the epoch only once fit has
            # started; the stream is built now, so it reads the backup's epoch first.
            start = max(int(initial_epoch), stream.restored_epoch(kwargs.get("callbacks")))
            make = lambda **kw: self.make_train_dataset(  # noqa: E731
                raw, batch_size=batch_size or 32, initial_epoch=start,
                steps_per_epoch=steps_per_epoch, **kw)
            x = make()
            if steps_per_epoch is None and self.train_steps_per_epoch is None:
                n = stream.count(stream.image_dataset(raw, self.channels, self.image_size))
                if n is not None:
                    x = make(num_images=n)
        if steps_per_epoch is None:
            steps_per_epoch = self.train_steps_per_epoch
            if steps_per_epoch is None:
                raise ValueError("The train stream is endless: pass steps_per_epoch.")
        cache = self.teacher_cache
        if cache is not None:  # Keras epochs are data epochs only at the cache's length
            if built_here and steps_per_epoch == cache.steps_per_epoch:
                cache.check_epochs(initial_epoch, epochs)
            else:
                cache.check_steps(initial_epoch * steps_per_epoch, epochs * steps_per_epoch)
        kwargs["shuffle"] = False  # the view pipeline shuffles, seeded, per epoch
        kwargs.update(epochs=epochs, steps_per_epoch=steps_per_epoch,
                      initial_epoch=initial_epoch)
        return x, None, args, kwargs
