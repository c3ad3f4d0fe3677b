"""Where a FunMatch student's targets come from: :class:`TargetSource`.

A :class:`~kdzoo.distill.funmatch.FunMatchDistiller` owns one ``TargetSource``
(``d.target_source``), and only it holds the state of the choice: the traced
teacher function, the fixed targets with the images and temperature they were
computed for, and the teacher cache in use. Nothing else writes it, so the
distiller's attributes are never changed from outside (issue 26).

One contract for all three modes: a train batch either carries ``"targets"``
(tempered teacher probabilities ``[B, K]``, or ``[B, M, K]`` for ``M`` teachers)
or it does not, and then :meth:`TargetSource.batch_targets` runs the teacher on
the batch's teacher view.

* **online** (``same/*``, ``ind/*``, ``funmatch``): the teacher runs in every
  train step on the view the variant gives it.
* **fixed** (``fix/*``): the teacher runs once per training image, before
  training (:meth:`TargetSource.compute_fixed`; the bounded-memory crop streaming
  is :mod:`kdzoo.distill.funmatch.fixed_targets`); :meth:`TargetSource.fixed_for`
  reuses them while the same images and temperature are trained on, and the
  stream zips row ``i`` with image ``i`` before shuffling.
* **cache** (the per-view variants, teacher run ahead of time by
  :func:`kdzoo.distill.cache_teacher`): :meth:`TargetSource.use_cache` checks that
  a cache file fits the distiller, and :func:`with_cached_targets` zips its
  targets into the stream, in order.

Keeping the choice here lets :mod:`kdzoo.distill.funmatch.teacher_cache` be only the file
format, and :mod:`kdzoo.data.stream` only the order of images.
"""

import tensorflow as tf
from keras import ops

from kdzoo.data import stream
from kdzoo.distill.funmatch.fingerprint import architecture_fingerprint, weights_fingerprint
from kdzoo.distill.funmatch.views import check_number
from kdzoo.errors import CheckpointError

__all__ = ["TargetSource", "with_cached_targets", "check_cache_fits"]


class TargetSource:
    """The targets of one distiller: online teacher, fixed targets or a teacher cache.

    ``distiller``: the owner, read (teachers, views, temperature) but never written.
    ``mode`` is ``"fixed"`` for the ``fix/*`` variants, else ``"cache"`` while a
    teacher cache is in use and ``"online"`` otherwise.
    """

    def __init__(self, distiller):
        self._owner = distiller
        self._teacher_fn = None
        self.fixed_targets = None          # fix/*: float32 [N, num_classes]
        self.fixed_targets_source = None   # the object they were computed from
        self._fixed_temperature = None
        self._cache = None                 # a TeacherCache: see use_cache

    @property
    def mode(self):
        if self._owner.views.fixed:
            return "fixed"
        return "online" if self._cache is None else "cache"

    @property
    def cache(self):
        """The :class:`~kdzoo.distill.funmatch.teacher_cache.TeacherCache` in use, or None."""
        return self._cache

    def batch_targets(self, batch):
        """The targets of one train batch: the batch's own (fixed, cached) or the teacher's."""
        if "targets" in batch:
            return ops.cast(batch["targets"], "float32")
        return self._owner.teacher_member_probs(batch.get("teacher", batch["student"]))

    # -- fixed ----------------------------------------------------------------------
    def compute_fixed(self, images, batch_size=64):
        """The body of :meth:`FunMatchDistiller.prepare_targets` (see there)."""
        from kdzoo.distill.funmatch.fixed_targets import compute_fixed_targets as compute

        d = self._owner
        if not d.views.fixed:
            raise ValueError(f"Variant {d.variant!r} has no fixed targets; only "
                             "fix/rs, fix/cc and fix/ic_ens do.")
        batch_size = int(check_number(batch_size, "batch_size", minimum=1,
                                      hint=" It is the teacher's batch in views."))
        dataset = stream.image_dataset(images, d.channels, d.image_size)
        n = stream.count(dataset)
        if n is None:
            raise ValueError(f"{d.variant} needs a finite train dataset: its targets "
                             "are computed once per image.")
        teacher_fn = self._traced_teacher()
        targets = compute(lambda v: ops.convert_to_numpy(teacher_fn(v)), d.views, dataset, n,
                          batch_size)
        self.fixed_targets = targets
        self.fixed_targets_source = images
        self._fixed_temperature = d.temperature
        return targets

    def _traced_teacher(self):
        """The teacher's tempered member probabilities as one traced function, kept per T.

        The trace reads the temperature as a constant, so a changed ``temperature``
        needs a new trace (else ``fixed_for`` would recompute at the old T).
        """
        temperature = self._owner.temperature
        if self._teacher_fn is None or self._teacher_fn[0] != temperature:
            self._teacher_fn = (temperature, tf.function(self._owner.teacher_member_probs,
                                                         reduce_retracing=True))
        return self._teacher_fn[1]

    def fixed_for(self, images, n):
        """The fixed targets of ``images`` (N = ``n``): the stored ones if they fit, else new."""
        d = self._owner
        stale = (self.fixed_targets is None or self.fixed_targets_source is not images
                 or self._fixed_temperature != d.temperature
                 or len(self.fixed_targets) != n)
        if stale:
            d.prepare_targets(images)  # the public method: a subclass may override it
        return self.fixed_targets

    # -- cached ---------------------------------------------------------------------
    def use_cache(self, cache, verify=True):
        """The body of :meth:`FunMatchDistiller.use_teacher_cache` (see there)."""
        from kdzoo.distill.funmatch.teacher_cache import TeacherCache, open_teacher_cache

        if cache is None:
            self._cache = None
            return None
        if not isinstance(cache, TeacherCache):
            cache = open_teacher_cache(cache, verify=verify)
        check_cache_fits(cache, self._owner)
        self._cache = cache
        return cache

    def with_cache(self, batches, info, images):
        """``batches`` with the cache's targets zipped in, if a cache is in use."""
        if self._cache is None:
            return batches
        return with_cached_targets(self._cache, batches, self._owner.temperature, info, images)


def check_cache_fits(cache, distiller):
    """Refuse a cache whose teacher, classes or view settings differ from the distiller's."""
    h = cache.header
    if distiller.views.fixed:
        raise ValueError(
            f"Teacher cache {cache.path}: variant {distiller.variant!r} already trains "
            "without the teacher (prepare_targets); caches are for the per-view variants.")
    cache.check_views(distiller.views.settings())
    if distiller.num_classes != h["num_classes"]:
        raise CheckpointError(
            f"Teacher cache {cache.path} holds {h['num_classes']} classes; the models "
            f"predict {distiller.num_classes}.")
    configs = [architecture_fingerprint(t) for t in distiller.teachers]
    if configs != h.get("teacher_config_sha256"):
        raise CheckpointError(
            f"Teacher cache {cache.path} was built with another teacher architecture or "
            "preprocessing (config sha256 "
            f"{', '.join(p[:12] for p in h.get('teacher_config_sha256') or ['none'])}; "
            f"this distiller's: {', '.join(p[:12] for p in configs)}): its logits would "
            "differ. Use the same teacher model or rebuild the cache.")
    prints = [weights_fingerprint(t) for t in distiller.teachers]
    if prints != h["teacher_sha256"]:
        raise CheckpointError(
            f"Teacher cache {cache.path} was built with another teacher (weights sha256 "
            f"{', '.join(p[:12] for p in h['teacher_sha256'])}; this distiller's: "
            f"{', '.join(p[:12] for p in prints)}). Load the same teacher weights or "
            "rebuild the cache.")


def with_cached_targets(cache, batches, temperature, info, images):
    """``batches`` of views with the cache's targets in place of the teacher view.

    ``info``: the stream's :class:`kdzoo.data.stream.StreamInfo`, checked against
    the cache's header. The stream may start at any step the cache holds (a resumed
    run starts wherever its checkpoint is): the cache's targets are in step order.
    """
    cache_epoch, rest = divmod(info.initial_step, cache.steps_per_epoch)
    cache.check_stream(info.batch_size, info.num_images, info.shuffle_buffer, info.shuffle,
                       cache_epoch, images)
    cached = cache.dataset(cache_epoch, temperature).skip(rest)
    return tf.data.Dataset.zip((batches, cached)).map(
        lambda b, t: {"student": b["student"], "targets": t})
