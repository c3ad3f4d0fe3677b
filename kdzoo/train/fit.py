"""Resumable Keras ``fit`` over the authors' step schedule, and the eval preprocessing.

Why apart from :mod:`kdzoo.train`: the runner describes *what* a run is
(FunMatch, supervised); this module is *how* any run is stepped, checkpointed
and evaluated, so benchmarks and user loops can use it without the run records.
"""

import dataclasses
import numbers
import os

import keras

from kdzoo import atomic
from kdzoo.train import checkpointing
from kdzoo.train.distribute import worker_subdir
from kdzoo.data.stream import total_steps
from kdzoo.train.precision import resolve_precision
from kdzoo.train.progress import Progress

__all__ = ["seed_everything", "set_precision", "fit_resumable", "fit_schedule", "Schedule",
           "make_schedule", "eval_text", "eval_resize_small", "eval_batches"]


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and TF/Keras init; optionally make TF ops deterministic."""
    import tensorflow as tf
    keras.utils.set_random_seed(int(seed))
    # TF's global seed must not be 0: tf.data's shuffle with a per-epoch tensor seed
    # then fails while tracing (random_seed.get_seed compares the seeds to (0, 0)).
    tf.random.set_seed(int(seed) + 0x5EED)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def set_precision(mixed_precision):
    """``None``/``"float32"``, ``"mixed_bfloat16"``, ``"mixed_float16"`` or ``"auto"``.

    ``"auto"``: bf16 where the hardware runs it natively, see :mod:`kdzoo.train.precision`.
    """
    policy = resolve_precision(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def fit_resumable(model, make_train, *, workdir, epochs, steps_per_epoch=None,
                  validation_data=None, checkpoint_every=1, callbacks=(), verbose="auto",
                  last_epoch_steps=None, checkpoint_every_minutes=None, keep_checkpoints=2):
    """``model.fit`` that resumes from ``workdir/checkpoints`` and checkpoints atomically.

    ``make_train(initial_epoch)`` returns the training data from that epoch on
    (deterministic in the epoch). Checkpoints: every ``checkpoint_every`` epochs or
    ``checkpoint_every_minutes``, whichever first, and after the last epoch; the
    last ``keep_checkpoints`` are kept. ``last_epoch_steps``: the final epoch runs
    only this many steps (a schedule that is not a whole number of intervals).
    Resumes at the checkpoint's epoch, so keep ``steps_per_epoch`` across resumes;
    :func:`fit_schedule` resumes at the exact step instead. Returns the number of
    epochs trained now.
    """
    state = checkpointing.restore_state(model, os.path.join(workdir, "checkpoints"))
    initial_epoch = 0 if state is None else state["epoch"]
    if initial_epoch >= epochs:
        return 0
    short = last_epoch_steps is not None and steps_per_epoch and last_epoch_steps < steps_per_epoch
    legs = [(epochs - 1, steps_per_epoch), (epochs, last_epoch_steps)] if short else \
        [(epochs, steps_per_epoch)]
    end_step = None if not steps_per_epoch else \
        (epochs - 1) * steps_per_epoch + (last_epoch_steps or steps_per_epoch)
    step_of = None if end_step is None else (lambda e: min(e * steps_per_epoch, end_step))
    _fit_legs(model, make_train, legs, initial_epoch, workdir, validation_data, callbacks,
              verbose, step_of, every=checkpoint_every, keep=keep_checkpoints,
              every_minutes=checkpoint_every_minutes)
    return epochs - initial_epoch


def fit_schedule(model, make_train, schedule, *, workdir, validation_data=None, callbacks=(),
                 verbose="auto", checkpoint_every_minutes=None, keep_checkpoints=2,
                 batch_size=None):
    """Resumable ``fit`` over a :class:`Schedule`; ``make_train(step)`` streams from ``step``.

    A resume starts at the stream step recorded with the checkpoint, never at one
    recomputed from its Keras epoch: the interval (``log_every_steps``, capped by the
    schedule's length) may differ from the run that wrote it, and ``epochs`` may have
    grown. The remaining ``total_steps - step`` steps are trained exactly, in Keras
    epochs of ``schedule.interval`` steps counted on from the checkpoint's epoch (the
    last one shorter), so checkpoint numbers keep rising. Unless ``verbose=0``, each
    Keras epoch also prints the run's step / total, images/s (given ``batch_size``) and
    ETA (:class:`kdzoo.train.progress.Progress`). Returns the steps trained now.
    """
    state = checkpointing.restore_state(model, os.path.join(workdir, "checkpoints"))
    epoch0, step0 = (0, 0) if state is None else (state["epoch"], state["step"])
    if step0 is None:  # a model without optimizer and a record without step: the old rule
        step0 = schedule.step_of(epoch0)
    total, interval = schedule.total_steps, schedule.interval
    if step0 >= total:
        return 0
    windows = -(-(total - step0) // interval)
    last = total - step0 - (windows - 1) * interval
    legs = [(epoch0 + windows - 1, interval), (epoch0 + windows, last)] if last < interval \
        else [(epoch0 + windows, interval)]

    def step_of(epoch):  # the stream step at the start of Keras epoch ``epoch``
        return min(step0 + (epoch - epoch0) * interval, total)

    if verbose != 0:
        callbacks = [*callbacks, Progress(total, step_of, start_step=step0,
                                          batch_size=batch_size)]
    _fit_legs(model, lambda e: make_train(step_of(e)), legs, epoch0, workdir, validation_data,
              callbacks, verbose, step_of, every=schedule.checkpoint_every,
              keep=keep_checkpoints, every_minutes=checkpoint_every_minutes)
    return total - step0


def _fit_legs(model, make_train, legs, start, workdir, validation_data, callbacks, verbose,
              step_of, **checkpoint):
    """``model.fit`` per ``(end epoch, steps per epoch)`` leg, from Keras epoch ``start``."""
    # Every worker of a multi-worker run restores the chief's checkpoint; only the
    # chief writes into workdir, the others into workdir/worker-<i> (never read back).
    own = os.path.join(workdir, worker_subdir() or "")
    os.makedirs(own, exist_ok=True)
    history = os.path.join(own, "history.csv")
    trim_history(history, start)
    # The CSV row of an epoch is written before its checkpoint: a kill between the two
    # leaves an extra row (trimmed on resume), never a missing one.
    all_callbacks = [checkpointing.StopOnNonFiniteLoss(),
                     keras.callbacks.CSVLogger(history, append=True),
                     checkpointing.ResumableCheckpoint(
                         os.path.join(own, "checkpoints"), step_of=step_of, **checkpoint),
                     keras.callbacks.TensorBoard(os.path.join(own, "logs")),
                     *callbacks]
    for end, steps in legs:
        if start >= end:
            continue
        model.fit(make_train(start), epochs=end, initial_epoch=start, steps_per_epoch=steps,
                  validation_data=validation_data, callbacks=all_callbacks, verbose=verbose)
        start = end


def trim_history(path, epochs_done):
    """Keep the rows of ``history.csv`` for Keras epochs ``< epochs_done`` (and the header).

    A resume retrains from the checkpoint's epoch, whose rows (and any half-written
    line a kill left) are dropped first, so every epoch has exactly one row.
    """
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    header = lines[:1] if lines and lines[0].endswith("\n") else []
    kept = header + [line for line in lines[1:] if line.endswith("\n")
                        and line.split(",", 1)[0].strip().isdigit()
                        and int(line.split(",", 1)[0]) < int(epochs_done)]
    if kept != lines:
        atomic.write_text(path, "".join(kept), ".csv")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The step plan of a run: the authors' step count cut into Keras-epoch intervals."""

    total_steps: int
    interval: int            # steps per Keras epoch (logging / checkpoint granularity)
    epochs: int              # Keras epochs = ceil(total_steps / interval)
    last_epoch_steps: int    # steps of the final Keras epoch (<= interval)
    checkpoint_every: int    # in Keras epochs
    warmup_steps: int

    @property
    def checkpoint_every_steps(self):
        return self.checkpoint_every * self.interval

    def step_of(self, epoch):
        """The global step at the start of Keras epoch ``epoch`` (= the stream position)."""
        return min(int(epoch) * self.interval, self.total_steps)


def make_schedule(epochs, num_examples, batch_size, *, log_every_steps=500,
                  checkpoint_every_steps=5000, warmup_steps=0):
    """:class:`Schedule` for ``epochs`` data epochs of ``num_examples`` at ``batch_size``."""
    total = total_steps(epochs, num_examples, batch_size)
    for name, value in (("log_every_steps", log_every_steps),
                        ("checkpoint_every_steps", checkpoint_every_steps)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    interval = max(1, min(int(log_every_steps), int(checkpoint_every_steps), total))
    count = -(-total // interval)
    return Schedule(total_steps=total, interval=interval, epochs=count,
                    last_epoch_steps=total - (count - 1) * interval,
                    checkpoint_every=max(1, round(checkpoint_every_steps / interval)),
                    warmup_steps=max(0, min(int(warmup_steps), total - 1)))


def eval_text(spec, image_size):
    """The evaluation preprocessing as text, e.g. ``resize_small(160)|central_crop(128)``."""
    return f"resize_small({eval_resize_small(spec, image_size)})|central_crop({image_size})"


def eval_resize_small(spec, image_size):
    """The spec's ``resize_small`` scaled to ``image_size`` (160 at 128 px stays 160)."""
    return round(spec.eval_resize_small * int(image_size) / spec.input_size)


def eval_batches(examples, image_size, batch_size, resize_small=None, method="area"):
    """(image, label) examples -> batched (``resize_small(R)|central_crop(S)`` view, label).

    The authors' evaluation (:func:`kdzoo.data.eval_preprocess`); ``resize_small``
    defaults to ``image_size`` (the central square, no resize beyond it); ``method``
    is the resize's interpolation (a card's ``interpolation``).
    """
    import tensorflow as tf

    from kdzoo.data.pipeline import eval_preprocess
    r = image_size if resize_small is None else int(resize_small)
    return examples.map(lambda image, label: (eval_preprocess(image, image_size, r, method), label),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
                        ).batch(batch_size).prefetch(tf.data.AUTOTUNE)
