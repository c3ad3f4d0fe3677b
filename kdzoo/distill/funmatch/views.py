"""The eight ways of teaching of Beyer et al. 2022 (sec. 3): raw image -> views.

============  =============================================  ======================================
variant       student view                                   teacher
============  =============================================  ======================================
fix/rs        whole image resized                            fixed target: whole image resized
fix/cc        mild random crop + flip                        fixed target: central crop
fix/ic_ens    inception crop + flip                          fixed target: mean over
                                                             ``ensemble_crops`` (1,000) inception
                                                             crops (with flips)
ind/rc        mild random crop + flip                        an independent random crop + flip
ind/ic        inception crop + flip                          an independent inception crop + flip
same/rc       mild random crop + flip                        the same box and flip
same/ic       inception crop + flip                          the same box and flip
funmatch      inception crop + flip, then batch mixup        the same box, flip and mixup
============  =============================================  ======================================

(``fix/rs`` is the one variant whose student view carries no randomness: the
paper's "resize" baseline.)

Boxes are sampled in source pixels and rendered at each model's own size, so
with ``teacher_image_size != image_size`` the teacher sees the same box at its
resolution. Random streams are keyed by ``(seed, epoch, image index)``, mixup
by ``(seed, epoch, step)``: see :mod:`kdzoo.data.augment`.

Train views are rendered as big_vision ``pp/ops_image.py`` renders them
(``antialias=False``, the default): inception crops and whole-image resizes
plain bilinear without antialiasing, short-side crops (``rc``, ``cc``) with
area resampling (:func:`kdzoo.data.augment.train_resize`). Eval views are
not affected.

A per-image call returns a dict: ``{"student": [S, S, C]}`` when the teacher
shares the student's view at the same size (the teacher then reads
``"student"``), else also ``"teacher": [T, T, C]``; ``fix/*`` variants return
``{"student", "index"}`` and the index is later exchanged for the cached
target.
"""

import numbers

import tensorflow as tf

from kdzoo.data import augment

from kdzoo.distill._checks import (_is_number, check_area_range, check_number,  # noqa: F401
                                   check_size)
from kdzoo.distill.funmatch.variants import FIXED_VARIANTS, VARIANTS, check_variant, get_variant  # noqa: F401


def is_fixed(variant):
    return get_variant(variant).fixed


class ViewMaker:
    """Builds train, target and eval views for one variant. Plain Python, no state.

    Args:
        variant: one of :data:`VARIANTS`.
        image_size: side of the student's square view.
        teacher_image_size: side of the teacher's view (default: ``image_size``).
        seed: integer seed of every random stream.
        flip: random horizontal flips on train views (shared when the view is).
        crop_fraction: side of the ``rc`` / ``cc`` squares as a fraction of the
            short side (0.875 = resize 256, crop 224).
        inception_area_range: area fraction range of inception crops.
        mixup_alpha: mixup ratio ``max(r, 1 - r)``, ``r ~ Beta(alpha, alpha)``
            (``funmatch``; 1.0: uniform on [0.5, 1]).
        ensemble_crops: inception crops averaged per target by ``fix/ic_ens``
            (the paper's 1,000; rendered and run in batches, see
            ``FunMatchDistiller.prepare_targets``).
        eval_crop_fraction: eval views are the central square with this fraction
            of the short side, resized (1.0: the largest central square).
        antialias: render train views with antialiased bilinear instead of
            big_vision's resampling (see the module docstring).
        batched_render: where the views allow it (:meth:`can_render_batched`:
            bilinear train views of images of one static size), the train
            stream samples boxes per image but renders them per batch
            (:func:`kdzoo.data.batched_crops.render_boxes`): the same views up
            to float rounding, with far fewer ``tf.data`` ops. False (the
            default): render per image, bit-identical to earlier kdzoo.
    """

    def __init__(self, variant, image_size, teacher_image_size=None, seed=0, flip=True,
                 crop_fraction=augment.CROP_FRACTION,
                 inception_area_range=augment.INCEPTION_AREA_RANGE, mixup_alpha=1.0,
                 ensemble_crops=1000, eval_crop_fraction=1.0, antialias=False,
                 batched_render=False):
        self.variant = check_variant(variant)
        self.row = get_variant(variant)
        self.image_size = check_size(image_size, "image_size")
        self.teacher_image_size = (self.image_size if teacher_image_size is None
                                   else check_size(teacher_image_size, "teacher_image_size"))
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__}).")
        self.seed = int(seed)
        self.flip = bool(flip)
        if not _is_number(crop_fraction) or not 0.0 < crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction!r}.")
        if not _is_number(eval_crop_fraction) or not 0.0 < eval_crop_fraction <= 1.0:
            raise ValueError(f"eval_crop_fraction must be in (0, 1], got "
                             f"{eval_crop_fraction!r}.")
        if int(ensemble_crops) < 1:
            raise ValueError(f"ensemble_crops must be >= 1, got {ensemble_crops}.")
        self.crop_fraction = float(crop_fraction)
        self.inception_area_range = check_area_range(inception_area_range)
        self.mixup_alpha = check_number(
            mixup_alpha, "mixup_alpha", minimum=0.0,
            hint=" It is the Beta(alpha, alpha) mixup ratio; 0 turns mixup off.")
        self.ensemble_crops = int(ensemble_crops)
        self.eval_crop_fraction = float(eval_crop_fraction)
        self.antialias = bool(antialias)
        # Not in settings(): both paths render the same views (up to float rounding).
        self.batched_render = bool(batched_render)

    def settings(self):
        """The settings that decide the train views (a teacher cache records and checks them)."""
        return {"variant": self.variant, "seed": self.seed, "image_size": self.image_size,
                "teacher_image_size": self.teacher_image_size, "flip": self.flip,
                "crop_fraction": self.crop_fraction,
                "inception_area_range": [float(a) for a in self.inception_area_range],
                "mixup_alpha": self.mixup_alpha, "antialias": self.antialias}

    # -- properties ----------------------------------------------------------
    @property
    def fixed(self):
        return self.row.fixed

    @property
    def shared(self):
        """Teacher and student see one view (same box, flip and mixup)."""
        return self.row.shared

    @property
    def emits_teacher_view(self):
        return not self.fixed and not (self.shared and
                                       self.teacher_image_size == self.image_size)

    @property
    def min_image_size(self):
        return self.image_size

    # -- boxes ---------------------------------------------------------------
    def _box(self, kind, image, key):
        if kind == "ic":
            return augment.inception_crop_box(image, key, self.inception_area_range)
        if kind == "rc":
            return augment.random_crop_box(image, key, self.crop_fraction)
        if kind == "cc":
            return augment.central_crop_box(image, self.crop_fraction)
        return augment.full_box(image)

    def _render(self, image, box, size, kind):
        method, antialias = augment.train_resize(kind, self.antialias)
        return augment.crop_resize(image, box, size, antialias=antialias, method=method)

    def _flip(self, key):
        if not self.flip:
            return tf.constant(False)
        return augment.flip_decision(key)

    def _student_kind(self):
        return self.row.student_crop

    # -- per-image train views -----------------------------------------------
    def train_boxes(self, image, index, epoch):
        """Where the views of image ``index`` in ``epoch`` come from, before rendering.

        ``{"student_box", "student_flip"}`` plus ``"teacher_box"`` / ``"teacher_flip"``
        for online teachers; boxes are ``[top, left, height, width]`` in source
        pixels. The same keys as :meth:`train_views` uses, so they describe exactly
        the views it renders (for inspection and plots).
        """
        return self._boxes(augment.check_min_size(image, self.min_image_size), index, epoch)

    def _boxes(self, image, index, epoch):
        key = augment.make_key(self.seed, epoch, index)
        kind = self._student_kind()
        s_box = self._box(kind, image, augment.make_key(key, augment.STUDENT_CROP))
        s_flip = (self._flip(augment.make_key(key, augment.STUDENT_FLIP))
                  if self.row.student_flip else tf.constant(False))
        out = {"student_box": s_box, "student_flip": s_flip}
        if self.fixed:
            return out
        if self.shared:
            t_box, t_flip = s_box, s_flip
        else:  # independent: its own box and flip of the same kind
            t_box = self._box(kind, image, augment.make_key(key, augment.TEACHER_CROP))
            t_flip = self._flip(augment.make_key(key, augment.TEACHER_FLIP))
        return dict(out, teacher_box=t_box, teacher_flip=t_flip)

    def train_views(self, image, index, epoch):
        """Views of one raw image ``[H, W, C]`` for image ``index`` in ``epoch``."""
        image = augment.check_min_size(image, self.min_image_size)
        boxes = self._boxes(image, index, epoch)  # the size is checked once per image
        kind = self._student_kind()
        out = {"student": augment.maybe_flip(
            self._render(image, boxes["student_box"], self.image_size, kind),
            boxes["student_flip"])}
        if self.fixed:
            out["index"] = tf.cast(index, tf.int64)
        elif self.emits_teacher_view:
            out["teacher"] = augment.maybe_flip(
                self._render(image, boxes["teacher_box"], self.teacher_image_size, kind),
                boxes["teacher_flip"])
        return out

    # -- batched rendering (kdzoo.data.batched_crops) ------------------------------
    def can_render_batched(self, image_shape):
        """Whether train views of images of static ``image_shape`` can be rendered per batch.

        True when ``batched_render`` is on and the variant's train views are
        bilinear (``ic`` / ``rs`` crops; the ``rc`` / ``cc`` area resampling is
        not, unless ``antialias``) and every image has the one static size a
        batch of raw images needs (arrays; not variable-size TFDS images).
        """
        from kdzoo.data import batched_crops
        method, _ = augment.train_resize(self._student_kind(), self.antialias)
        return self.batched_render and batched_crops.eligible(image_shape, method)

    def train_boxes_and_image(self, image, index, epoch):
        """The per-image half of the batched path: :meth:`train_boxes` plus ``"image"``.

        After ``batch``, :meth:`render_batch` turns these into what
        :meth:`train_views` returns (same keys, same boxes and flips).
        """
        image = augment.check_min_size(image, self.min_image_size)
        out = dict(self._boxes(image, index, epoch), image=image)
        if self.fixed:
            out["index"] = tf.cast(index, tf.int64)
        return out

    def render_batch(self, batch):
        """Batched :meth:`train_boxes_and_image` elements -> batched :meth:`train_views`."""
        from kdzoo.data import batched_crops
        batch = dict(batch)
        images = batch.pop("image")
        _, antialias = augment.train_resize(self._student_kind(), self.antialias)
        boxes = {k: batch.pop(f"{k}_box", None) for k in ("student", "teacher")}
        flips = {k: batch.pop(f"{k}_flip", None) for k in ("student", "teacher")}
        roles = ["student"] + (["teacher"] if self.emits_teacher_view else [])
        sizes = {"student": self.image_size, "teacher": self.teacher_image_size}
        for role in roles:
            batch[role] = batched_crops.render_boxes(images, boxes[role], sizes[role],
                                                     flips[role], antialias=antialias)
        return batch

    def render_teacher(self, image, box, flip):
        """The teacher's view of ``box`` / ``flip`` at its own size (see :meth:`train_boxes`)."""
        return augment.maybe_flip(
            self._render(image, box, self.teacher_image_size, self._student_kind()), flip)

    def batch_views(self, batch, epoch, step):
        """Batch-level part of the views: mixup where the row has it (shared by both)."""
        if not self.row.mixup or self.mixup_alpha <= 0:
            return batch
        key = augment.make_key(augment.make_key(self.seed, augment.MIXUP), epoch, step)
        images = {k: batch[k] for k in ("student", "teacher") if k in batch}
        mixed, _ = augment.mixup(images, key, self.mixup_alpha)
        return dict(batch, **mixed)

    # -- fix/* teacher target views -------------------------------------------
    @property
    def target_crops(self):
        """Teacher views per image of a fixed target: ``ensemble_crops`` or 1."""
        return self.ensemble_crops if self.row.target == "ic_ens" else 1

    def target_view(self, image, index, crop=0):
        """View ``crop`` of the teacher's fixed views of image ``index``: ``[T, T, C]``.

        ``fix/rs``: the whole image; ``fix/cc``: the central crop (``crop`` is
        ignored); ``fix/ic_ens``: inception crop (with flip) number ``crop``,
        keyed by ``(seed, index, crop)``. Independent of the epoch: computed
        once, averaged, cached.
        """
        image = augment.check_min_size(image, self.min_image_size)
        size = self.teacher_image_size
        if self.row.target == "rs":
            return self._render(image, augment.full_box(image), size, "rs")
        if self.row.target == "cc":
            return self._render(image, augment.central_crop_box(image, self.crop_fraction),
                                size, "cc")
        if self.row.target != "ic_ens":
            raise ValueError(f"Variant {self.variant!r} has no fixed teacher targets.")
        key = augment.make_key(augment.make_key(self.seed, augment.ENSEMBLE), index)
        crop_key = augment.make_key(key, crop)
        box = augment.inception_crop_box(image, crop_key, self.inception_area_range)
        flip = self._flip(augment.make_key(crop_key, augment.TEACHER_FLIP))
        return augment.maybe_flip(self._render(image, box, size, "ic"), flip)

    def target_views(self, image, index):
        """All :attr:`target_crops` fixed views of image ``index``: ``[n, T, T, C]``.

        Holds every crop at once (1,000 x T x T x C floats for ``fix/ic_ens``):
        for small ``ensemble_crops`` and inspection; ``prepare_targets``
        renders :meth:`target_view` in bounded batches instead.
        """
        if self.target_crops == 1:
            return self.target_view(image, index)[None]
        spec = tf.TensorSpec([self.teacher_image_size] * 2 + [image.shape[-1]], tf.float32)
        return tf.map_fn(lambda k: self.target_view(image, index, k),
                         tf.range(self.target_crops, dtype=tf.int64), fn_output_signature=spec)

    # -- eval ------------------------------------------------------------------
    def eval_box(self, image):
        return augment.central_crop_box(image, self.eval_crop_fraction)

    def eval_views(self, image):
        """Deterministic eval views of one image: central square, resized per model."""
        box = self.eval_box(image)
        out = {"student": augment.crop_resize(image, box, self.image_size)}
        if self.teacher_image_size != self.image_size:
            out["teacher"] = augment.crop_resize(image, box, self.teacher_image_size)
        return out
