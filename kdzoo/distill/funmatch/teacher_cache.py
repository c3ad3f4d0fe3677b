"""Teacher-output cache: run the teacher once, ahead of time, train from the file.

Patient teaching runs the teacher on every view of every epoch, and the
teacher dominates the step (BiT-R152x2 costs about 11x a ResNet-50 forward).
Views are a pure function of ``(seed, epoch, image index)`` and mixup of
``(seed, epoch, step)`` (:mod:`kdzoo.data.augment`), so the teacher's outputs
for the exact views the student will see in epochs ``[initial_epoch, epochs)``
can be computed in a separate pass -- another process, machine or
accelerator -- and stored compactly::

    d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=128, seed=0)
    kdzoo.distill.cache_teacher(d, images, "pets.tcache", epochs=100, batch_size=512,
                                top_k=10)
    # later, anywhere (the same teacher weights, e.g. restored from a file):
    d.use_teacher_cache("pets.tcache")
    d.compile(optimizer=...)
    d.fit(images, batch_size=512, epochs=100)   # the teacher is never run

What the file stores, its format and every check it gets are described in
``docs/funmatch.md`` (section "Teacher-output cache").
"""

import hashlib
import json
import os
import struct

import numpy as np
import tensorflow as tf

from kdzoo.distill.funmatch.fingerprint import (array_fingerprint, images_fingerprint,
                                                weights_fingerprint)
from kdzoo.errors import CheckpointError

# The writer, cache_teacher, lives in kdzoo.distill.funmatch.cache_writer and the checks
# against a distiller in kdzoo.distill.funmatch.targets: this module is only the file format.
__all__ = ["TeacherCache", "open_teacher_cache", "teacher_fingerprint", "targets_from_cache"]

MAGIC = b"KDZOO-TCACHE-v1\n"
END_MAGIC = b"KDZOO-TCACHE-END"
FORMAT_VERSION = 1
_TRAILER = struct.Struct("<Q32s16s")  # header length, header sha256, end magic
_DTYPES = {"float16": np.float16, "float32": np.float32}

# View settings that change the stream: a cache must match all of them.
_VIEW_KEYS = ("variant", "seed", "image_size", "teacher_image_size", "flip",
              "crop_fraction", "inception_area_range", "mixup_alpha", "antialias")
# Header defaults for keys older caches lack (their views were rendered so).
_VIEW_DEFAULTS = {"antialias": True}
# Stream settings checked when the train dataset is built.
_STREAM_KEYS = ("batch_size", "num_images", "shuffle", "shuffle_buffer")


# ----------------------------------------------------------------- helpers ---
def teacher_fingerprint(model):
    """sha256 of a model's weights (see :mod:`kdzoo.distill.funmatch.fingerprint`)."""
    return weights_fingerprint(model)


_array_fingerprint = array_fingerprint


def _index_dtype(num_classes):
    return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


def targets_from_cache(values, indices, tail, num_classes, temperature, members=False):
    """Tempered target probabilities ``[..., K]`` (float32) from cached logits.

    ``values`` ``[..., M, k]`` are the stored (max-shifted) logits of ``M``
    teachers; ``indices`` their classes (None when ``k == K``: class order);
    ``tail`` ``[..., M]`` the mean of the dropped logits (None when ``k == K``).
    The temperature is applied here, at read time, so one cache serves every
    T. The ``M`` tempered distributions are averaged, or with ``members``
    returned one per teacher (``[..., M, K]``).
    """
    values = np.asarray(values, np.float32)
    if indices is None:
        logits = values
    else:
        logits = np.repeat(np.asarray(tail, np.float32)[..., None], num_classes, axis=-1)
        np.put_along_axis(logits, np.asarray(indices, np.int64), values, axis=-1)
    z = logits / np.float32(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return (p if members else p.mean(axis=-2)).astype(np.float32)


# ------------------------------------------------------------------- reader ---
class TeacherCache:
    """A verified, memory-mapped teacher-output cache (see the module docstring).

    Use :func:`open_teacher_cache` (or ``FunMatchDistiller.use_teacher_cache``)
    rather than the constructor.
    """

    def __init__(self, path, header, data):
        self.path = path
        self.header = header
        self._data = data  # np.memmap of the data region (uint8)

    # header shortcuts
    @property
    def epochs(self):
        """``(start, end)``: the cache covers epochs ``start <= e < end``."""
        return tuple(self.header["epochs"])

    @property
    def steps_per_epoch(self):
        return int(self.header["steps_per_epoch"])

    @property
    def batch_size(self):
        return int(self.header["batch_size"])

    @property
    def num_classes(self):
        return int(self.header["num_classes"])

    @property
    def top_k(self):
        return int(self.header["top_k"])

    def __repr__(self):
        h = self.header
        return (f"TeacherCache({self.path!r}, variant={h['variant']!r}, seed={h['seed']}, "
                f"epochs={self.epochs}, steps_per_epoch={self.steps_per_epoch}, "
                f"batch_size={self.batch_size}, top_k={self.top_k}/{self.num_classes})")

    # layout
    def _shapes(self):
        h = self.header
        lead = (h["steps_per_epoch"], h["batch_size"], h["num_teachers"])
        return lead + (h["top_k"],), lead

    def _block_bytes(self):
        h = self.header
        vshape, tshape = self._shapes()
        vsize = np.dtype(h["value_dtype"]).itemsize
        n = int(np.prod(vshape)) * vsize
        if h["top_k"] < h["num_classes"]:
            n += int(np.prod(vshape)) * np.dtype(h["index_dtype"]).itemsize
            n += int(np.prod(tshape)) * vsize
        return n

    def _epoch_arrays(self, epoch):
        """``(values, indices, tail)`` views of one epoch block (indices/tail may be None)."""
        h = self.header
        start, end = self.epochs
        if not start <= epoch < end:
            raise ValueError(f"Teacher cache {self.path} covers epochs [{start}, {end}); "
                             f"epoch {epoch} is not in it.")
        vshape, tshape = self._shapes()
        base = (epoch - start) * self._block_bytes()
        vdt = np.dtype(h["value_dtype"])
        nv = int(np.prod(vshape))
        values = self._data[base:base + nv * vdt.itemsize].view(vdt).reshape(vshape)
        if h["top_k"] == h["num_classes"]:
            return values, None, None
        idt = np.dtype(h["index_dtype"])
        off = base + nv * vdt.itemsize
        indices = self._data[off:off + nv * idt.itemsize].view(idt).reshape(vshape)
        off += nv * idt.itemsize
        nt = int(np.prod(tshape))
        tail = self._data[off:off + nt * vdt.itemsize].view(vdt).reshape(tshape)
        return values, indices, tail

    def verify(self):
        """Check the sha256 of every epoch block; raise CheckpointError on a mismatch."""
        size = self._block_bytes()
        for i, expected in enumerate(self.header["epoch_sha256"]):
            block = self._data[i * size:(i + 1) * size]
            if hashlib.sha256(block).hexdigest() != expected:
                raise CheckpointError(
                    f"Teacher cache {self.path} is corrupt: the data of epoch "
                    f"{self.epochs[0] + i} fails its sha256 check. Rebuild it with "
                    "kdzoo.distill.cache_teacher.")

    def targets(self, epoch, step, temperature, members=False):
        """Tempered targets ``[batch, num_classes]`` for one step of one epoch.

        ``members``: one distribution per teacher, ``[batch, teachers, num_classes]``.
        """
        values, indices, tail = self._epoch_arrays(epoch)
        return targets_from_cache(values[step], None if indices is None else indices[step],
                                  None if tail is None else tail[step], self.num_classes,
                                  temperature, members=members)

    # checks against a distiller / a stream
    def check_views(self, settings):
        """Refuse view settings (:meth:`kdzoo.distill.funmatch.views.ViewMaker.settings`) other
        than the cache's: its targets are for other views."""
        for key in _VIEW_KEYS:
            theirs = self.header.get(key, _VIEW_DEFAULTS.get(key))
            if settings[key] != theirs:
                raise CheckpointError(
                    f"Teacher cache {self.path} was built for {key}={theirs!r} but this "
                    f"distiller has {key}={settings[key]!r}: its views differ. Rebuild the "
                    "cache with kdzoo.distill.cache_teacher for these settings.")

    def check_stream(self, batch_size, num_images, shuffle_buffer, shuffle, initial_epoch,
                     images=None):
        """Refuse a train stream that is not the one the cache was built for."""
        h = self.header
        mine = {"batch_size": int(batch_size), "num_images": num_images,
                "shuffle": bool(shuffle), "shuffle_buffer": int(shuffle_buffer)}
        if num_images is None:
            raise ValueError(f"Teacher cache {self.path}: the number of train images is "
                             "unknown; pass num_images= (the cache holds "
                             f"{h['num_images']}).")
        for key in _STREAM_KEYS:
            if mine[key] != h[key]:
                raise CheckpointError(
                    f"Teacher cache {self.path} was built for {key}={h[key]!r} but the "
                    f"train stream has {key}={mine[key]!r}. Use the cache's settings or "
                    "rebuild it.")
        start, end = self.epochs
        if not start <= int(initial_epoch) < end:
            raise CheckpointError(
                f"Teacher cache {self.path} covers epochs [{start}, {end}); training "
                f"would start at epoch {initial_epoch}. Cache those epochs too.")
        recorded = h.get("images")
        if images is not None:
            if recorded is None:
                raise CheckpointError(
                    f"Teacher cache {self.path} records no fingerprint of its images (an "
                    "older kdzoo built it), so these images cannot be checked against "
                    "it. Rebuild it with kdzoo.distill.cache_teacher.")
            mine_images = images_fingerprint(images, num_images)
            for key in ("count", "element_spec", "sample_sha256"):
                if mine_images[key] != recorded[key]:
                    raise CheckpointError(
                        f"Teacher cache {self.path} was built on other train images: "
                        f"{key} {recorded[key]!r} there, {mine_images[key]!r} here. Pass "
                        "the images the cache was built on, or rebuild it.")
        fp = h.get("images_sha256")
        if fp is not None and images is not None:
            mine_fp = _array_fingerprint(images)
            if mine_fp is not None and mine_fp != fp:
                raise CheckpointError(
                    f"Teacher cache {self.path} was built on other train images (sha256 "
                    f"{fp[:12]}, these: {mine_fp[:12]}).")

    def check_steps(self, initial_step, total_steps):
        """Refuse a run of steps ``[initial_step, total_steps)`` the cache does not hold."""
        start, end = (e * self.steps_per_epoch for e in self.epochs)
        if not (start <= int(initial_step) and int(total_steps) <= end):
            raise CheckpointError(
                f"Teacher cache {self.path} holds steps [{start}, {end}) (epochs "
                f"{list(self.epochs)} of {self.steps_per_epoch} steps); the run needs "
                f"[{initial_step}, {total_steps}). Cache epochs up to "
                f"{-(-int(total_steps) // self.steps_per_epoch)}.")

    def check_epochs(self, initial_epoch, epochs):
        start, end = self.epochs
        if not (start <= int(initial_epoch) and int(epochs) <= end):
            raise CheckpointError(
                f"Teacher cache {self.path} covers epochs [{start}, {end}); fit asks for "
                f"[{initial_epoch}, {epochs}). Cache those epochs too (cache_teacher("
                f"..., initial_epoch={initial_epoch}, epochs={epochs})).")

    @property
    def num_teachers(self):
        return int(self.header["num_teachers"])

    def dataset(self, initial_epoch, temperature):
        """``tf.data`` of tempered targets, epoch ``initial_epoch`` onwards.

        ``[batch, K]`` for one teacher, ``[batch, teachers, K]`` for an ensemble
        (what ``FunMatchDistiller.teacher_member_probs`` gives online). Finite:
        it ends with the cache's last epoch (``fit`` checks the range first).
        """
        start, end = self.epochs
        steps = self.steps_per_epoch
        temperature = float(temperature)
        members = self.num_teachers > 1

        def gen():
            for epoch in range(int(initial_epoch), end):
                values, indices, tail = self._epoch_arrays(epoch)
                for step in range(steps):
                    yield targets_from_cache(
                        values[step], None if indices is None else indices[step],
                        None if tail is None else tail[step], self.num_classes,
                        temperature, members=members)

        shape = [self.batch_size] + ([self.num_teachers] if members else []) + [self.num_classes]
        spec = tf.TensorSpec(shape, tf.float32)
        return tf.data.Dataset.from_generator(gen, output_signature=spec)


def open_teacher_cache(path, verify=True):
    """Open and check a cache file; returns a :class:`TeacherCache`.

    Raises :class:`kdzoo.errors.CheckpointError` (naming ``path``) when the file
    is not a teacher cache, is truncated or corrupt. ``verify=False`` skips the
    per-epoch sha256 checks (the size and header checks always run).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No teacher cache at {path}; build one with "
                                "kdzoo.distill.cache_teacher.")
    size = os.path.getsize(path)
    rebuild = "Rebuild it with kdzoo.distill.cache_teacher, or copy it again."
    with open(path, "rb") as f:
        magic = f.read(len(MAGIC))
        if magic != MAGIC:
            if magic and MAGIC.startswith(magic):
                raise CheckpointError(f"Teacher cache {path} is truncated ({size} bytes). "
                                      f"{rebuild}")
            raise CheckpointError(f"{path} is not a kdzoo teacher cache (bad magic). Pass a "
                                  "file written by kdzoo.distill.cache_teacher.")
        if size < len(MAGIC) + _TRAILER.size:
            raise CheckpointError(f"Teacher cache {path} is truncated ({size} bytes). "
                                  f"{rebuild}")
        f.seek(size - _TRAILER.size)
        header_len, header_sha, end = _TRAILER.unpack(f.read(_TRAILER.size))
        if end != END_MAGIC:
            raise CheckpointError(
                f"Teacher cache {path} is truncated or corrupt: no end marker (was the "
                f"copy interrupted?). {rebuild}")
        data_len = size - _TRAILER.size - header_len - len(MAGIC)
        if data_len < 0:
            raise CheckpointError(f"Teacher cache {path} is corrupt: bad header length. "
                                  f"{rebuild}")
        f.seek(len(MAGIC) + data_len)
        raw = f.read(header_len)
    if hashlib.sha256(raw).digest() != header_sha:
        raise CheckpointError(f"Teacher cache {path} is corrupt: its header fails the "
                              f"sha256 check. {rebuild}")
    try:
        header = json.loads(raw.decode("utf-8"))
        if header.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(f"Teacher cache {path} has format version "
                                  f"{header.get('format_version')}; this kdzoo reads "
                                  f"{FORMAT_VERSION}. Rebuild it with this kdzoo's "
                                  "kdzoo.distill.cache_teacher.")
        data = (np.memmap(path, dtype=np.uint8, mode="r", offset=len(MAGIC), shape=(data_len,))
                if data_len else np.zeros([0], np.uint8))
        cache = TeacherCache(path, header, data)
        num_epochs = cache.epochs[1] - cache.epochs[0]
        expected = cache._block_bytes() * num_epochs
        hashes = len(header["epoch_sha256"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"Teacher cache {path} has a malformed header "
                              f"({type(e).__name__}: {e}). {rebuild}") from e
    if expected != data_len:
        raise CheckpointError(f"Teacher cache {path} is truncated or corrupt: "
                              f"{data_len} data bytes, the header describes {expected}. "
                              f"{rebuild}")
    if hashes != num_epochs:
        raise CheckpointError(f"Teacher cache {path} has a malformed header: {hashes} "
                              f"epoch sha256s for {num_epochs} epochs. {rebuild}")
    if verify:
        cache.verify()
    return cache
