"""Writing a teacher-output cache: :func:`cache_teacher`.

The file format and its reader are :mod:`kdzoo.distill.funmatch.teacher_cache`; this module
runs a :class:`~kdzoo.distill.funmatch.FunMatchDistiller`'s teacher over the exact
train stream and writes the file (atomically: temp file + rename).
"""

import hashlib
import json
import os

import numpy as np
import tensorflow as tf

from kdzoo.atomic import atomic_path
from kdzoo.data import stream as streams
from kdzoo.distill.funmatch.fingerprint import architecture_fingerprint, images_fingerprint
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.distill.funmatch.teacher_cache import (_DTYPES, _TRAILER, END_MAGIC, FORMAT_VERSION,
                                                  MAGIC, _array_fingerprint, _index_dtype,
                                                  open_teacher_cache, teacher_fingerprint)

__all__ = ["cache_teacher"]


def cache_teacher(distiller, images, path, epochs, *, initial_epoch=0, batch_size=32,
                  top_k=None, dtype="float16", num_images=None):
    """Run the teacher on every train view of epochs ``[initial_epoch, epochs)``; store it.

    Args:
        distiller: a :class:`FunMatchDistiller` (its teacher, variant and view
            settings define the stream). Any cache it uses is ignored here.
        images: the train images exactly as they will be given to ``fit`` /
            ``make_train_dataset`` (array ``[N, H, W, C]`` or dataset).
        path: the cache file to write (atomically: temp file + rename).
        epochs: end epoch, exclusive, like ``fit(epochs=...)``.
        initial_epoch: first epoch cached (a cache can cover a slice of a run;
            several machines can each build one slice).
        batch_size: the train batch size (the cache is laid out per step).
        top_k: logits kept per view (default: all classes).
        dtype: ``"float16"`` (default) or ``"float32"`` logits.
        num_images: as in ``make_train_dataset``, for datasets of unknown size.

    Returns the opened :class:`TeacherCache`.
    """
    if not isinstance(distiller, FunMatchDistiller):
        raise TypeError(f"cache_teacher takes a FunMatchDistiller, got "
                        f"{type(distiller).__name__}.")
    if distiller.views.fixed:
        raise ValueError(f"Variant {distiller.variant!r} already trains without the "
                         "teacher: use prepare_targets (fixed targets), not a cache.")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
    start, end = int(initial_epoch), int(epochs)
    if not 0 <= start < end:
        raise ValueError(f"Need 0 <= initial_epoch < epochs; got [{start}, {end}).")
    num_classes = distiller.num_classes
    k = num_classes if top_k is None else int(top_k)
    if not 1 <= k <= num_classes:
        raise ValueError(f"top_k must be in [1, {num_classes}], got {top_k}.")
    vdt = np.dtype(_DTYPES[dtype])
    idt = np.dtype(_index_dtype(num_classes))

    # The views alone (never a cache the distiller may be using): the teacher runs on them.
    stream, info = streams.funmatch_stream(distiller, images, int(batch_size),
                                           initial_epoch=start, num_images=num_images)
    n = info.num_images
    if n is None:
        raise ValueError("The number of train images is unknown: pass num_images=.")
    steps, shuffle_buffer = n // int(batch_size), info.shuffle_buffer
    limit = float(np.finfo(vdt).max)
    teachers = distiller.teachers

    @tf.function(reduce_retracing=True)
    def run(view):
        logits = tf.stack([tf.cast(t(view, training=False), tf.float32) for t in teachers],
                          axis=1)  # [B, M, K]
        logits = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
        logits = tf.maximum(logits, -limit)  # stay finite in float16
        if k == num_classes:
            return logits, tf.zeros([0], tf.int32), tf.zeros([0], tf.float32)
        values, indices = tf.math.top_k(logits, k=k, sorted=True)
        rest = (tf.reduce_sum(logits, axis=-1) - tf.reduce_sum(values, axis=-1))
        return values, indices, rest / float(num_classes - k)

    path = os.fspath(path)
    epoch_sha = []
    with atomic_path(path, ".tcache") as tmp:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            it = iter(stream)
            for _ in range(start, end):
                vals, idxs, tails = [], [], []
                for _ in range(steps):
                    batch = next(it)
                    v, i, r = run(batch.get("teacher", batch["student"]))
                    vals.append(v.numpy().astype(vdt))
                    if k < num_classes:
                        idxs.append(i.numpy().astype(idt))
                        tails.append(r.numpy().astype(vdt))
                parts = [np.stack(vals)]
                if k < num_classes:
                    parts += [np.stack(idxs), np.stack(tails)]
                h = hashlib.sha256()
                for p in parts:
                    b = np.ascontiguousarray(p).astype(p.dtype.newbyteorder("<")).tobytes()
                    h.update(b)
                    f.write(b)
                epoch_sha.append(h.hexdigest())
            header = dict(
                format_version=FORMAT_VERSION, stores="logits",
                logits_note="max-shifted teacher logits; temperature applied when read",
                **distiller.views.settings(),
                batch_size=int(batch_size), num_images=n, steps_per_epoch=int(steps),
                shuffle=shuffle_buffer > 1,
                shuffle_buffer=int(shuffle_buffer), epochs=[start, end],
                num_teachers=len(teachers), num_classes=num_classes, top_k=k,
                value_dtype=vdt.newbyteorder("<").str,
                index_dtype=idt.newbyteorder("<").str,
                teacher_sha256=[teacher_fingerprint(t) for t in teachers],
                teacher_config_sha256=[architecture_fingerprint(t) for t in teachers],
                images=images_fingerprint(images, n),
                images_sha256=_array_fingerprint(images), epoch_sha256=epoch_sha)
            raw = json.dumps(header, sort_keys=True).encode("utf-8")
            f.write(raw)
            f.write(_TRAILER.pack(len(raw), hashlib.sha256(raw).digest(), END_MAGIC))
            f.flush()
            os.fsync(f.fileno())
    return open_teacher_cache(path, verify=False)
