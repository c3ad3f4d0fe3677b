"""Checkpoints that survive preemption and scale to paper-size runs; a non-finite guard.

A checkpoint is ``ckpt-EEEEEE.weights.h5`` (``E`` = Keras epochs completed, each
epoch being one logging / checkpoint interval of the runner) plus ``state.json``
naming the newest complete one (``{"epoch", "step", "weights", "sha256"}``) and
recording, under ``"checkpoints"``, the stream step and sha256 of every kept file.

What a checkpoint holds: the trained model's variables and the optimizer state,
never a frozen teacher (a distiller's ``teachers`` and its metric trackers are
skipped): the teacher is rebuilt from its model card or file on resume, so a
checkpoint of BiT-R152x2 -> R50x1 costs the student and its two Adam slots, not
another 236M parameters. The train stream's position is the ``step`` recorded with
each checkpoint (:mod:`kdzoo.data.stream` reproduces any step): a resume starts
there, never at a step recomputed from the epoch (the interval may have changed).

Atomicity: weights then ``state.json`` are written to temporary files and
renamed, so a kill at any moment leaves ``state.json`` naming a complete file;
the previous checkpoints (the last ``keep``) stay until a newer one is complete.
Damage done afterwards (an emptied ``state.json``, a truncated file, flipped bytes:
the file's sha256 no longer matches its record) is survived by :func:`restore`: it
warns, naming the file, and falls back to the newest checkpoint that loads.
Checkpoints of older kdzoo (no recorded sha256) load unchecked.
"""

import hashlib
import json
import math
import os
import re
import time
import warnings

import h5py
import keras
import numpy as np
from keras.src.saving import saving_lib

from kdzoo.atomic import TEMP_PREFIX, atomic_path, write_json  # noqa: F401  (write_json re-exported)
from kdzoo.errors import CheckpointError
from kdzoo.errors import NonFiniteLossError  # noqa: F401  (raised here, public here)

STATE_FILE = "state.json"
_CKPT = re.compile(r"^ckpt-(\d{6,})\.weights\.h5$")


def checkpoint_name(epoch):
    return f"ckpt-{int(epoch):06d}.weights.h5"


def checkpoint_files(directory):
    """``[(epoch, file name)]`` of the checkpoint files in ``directory``, newest first."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), f) for f in os.listdir(directory) if (m := _CKPT.match(f))]
    return sorted(found, reverse=True)


def read_state(directory):
    """``{"epoch": E, "weights": file, ...}`` of the newest complete checkpoint, or None.

    Raises :class:`kdzoo.errors.CheckpointError` naming ``state.json`` when it is
    unreadable or names a file that is missing (:func:`restore` falls back instead).
    """
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        epoch, weights = int(state["epoch"]), str(state["weights"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e}).") from e
    if not os.path.exists(os.path.join(directory, weights)):
        raise CheckpointError(
            f"{path} names {weights}, which is missing; the checkpoint directory was "
            "modified by hand. Delete the directory to start afresh.")
    return dict(state, epoch=epoch, weights=weights)


def skipped_objects(model):
    """What a checkpoint of ``model`` leaves out: frozen teachers and metric trackers.

    Only models with a ``teachers`` attribute (:class:`kdzoo.FunMatchDistiller`)
    skip anything: their teachers are rebuilt from the card, their trackers reset.
    """
    teachers = list(getattr(model, "teachers", None) or [])
    return teachers + list(model.metrics) if teachers else []


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model, path):
    """Model (minus :func:`skipped_objects`) + optimizer variables to ``path``, atomically.

    Returns the file's sha256, hashed before the rename (so it is of what was written).
    """
    with atomic_path(path, ".weights.h5") as tmp:
        saving_lib.save_weights_only(model, tmp, objects_to_skip=skipped_objects(model) or None)
        digest = file_sha256(tmp)
    return digest


def load_checkpoint(model, path):
    """Load a :func:`save_checkpoint` file (builds the optimizer first, so its slots load)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    saving_lib.load_weights_only(model, path, objects_to_skip=skipped_objects(model) or None)


def checkpoint_variable_count(path):
    """Number of arrays stored in a ``.weights.h5`` checkpoint (what it really holds)."""
    count = 0

    def visit(_, obj):
        nonlocal count
        count += isinstance(obj, h5py.Dataset)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return count


def non_finite_weights(model):
    """Paths of ``model``'s float weights holding NaN or Inf (empty when all are finite)."""
    return [w.path for w in model.weights if "float" in str(w.dtype)
            and not np.all(np.isfinite(keras.ops.convert_to_numpy(w)))]


def weights_are_finite(model):
    return not non_finite_weights(model)


def remove_partial_writes(directory):
    """Delete temporary files a killed writer left behind (they are never read)."""
    if not os.path.isdir(directory):
        return []
    partial = [f for f in os.listdir(directory) if f.startswith(TEMP_PREFIX)]
    for name in partial:
        os.remove(os.path.join(directory, name))
    return partial


def _candidates(directory):
    """``(files to try, best first, {file: record})``: the one ``state.json`` names, then
    older ones; the records (step, sha256) are those ``state.json`` keeps, if readable."""
    files = checkpoint_files(directory)
    try:
        state = read_state(directory)
    except CheckpointError as e:
        older = files[0][1] if files else None
        warnings.warn(f"{e} Falling back to the newest checkpoint file"
                      + (f" ({older})." if older else ": there is none, starting afresh."),
                      RuntimeWarning, stacklevel=3)
        return files, {}
    if state is None:
        return [], {}
    records = state.get("checkpoints")
    records = dict(records) if isinstance(records, dict) else {}
    newest = {k: state[k] for k in ("step", "sha256") if k in state}
    records[state["weights"]] = dict(records.get(state["weights"]) or {}, **newest)
    # A complete file newer than state.json (killed between the two renames) is not
    # trusted: state.json is the commit point. Older files are the fallbacks.
    return [(state["epoch"], state["weights"])] + [(e, f) for e, f in files
                                                   if e < state["epoch"]], records


def _check_sha256(path, record):
    """Raise CheckpointError when ``path`` differs from the sha256 recorded for it (if any)."""
    expected = record.get("sha256") if isinstance(record, dict) else None
    if expected and file_sha256(path) != expected:
        raise CheckpointError(f"its sha256 differs from the one recorded in {STATE_FILE} "
                              "(the file was altered or damaged after it was written)")


def _step_of(model, record):
    """The stream step of a loaded checkpoint: its record, else the optimizer's count.

    Older kdzoo recorded only the newest file's step (= ``optimizer.iterations``); the
    optimizer's restored iteration count is the same number for the older files.
    """
    step = record.get("step") if isinstance(record, dict) else None
    if step is not None:
        return int(step)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and optimizer.built:
        return int(keras.ops.convert_to_numpy(optimizer.iterations))
    return None


def restore_state(model, directory):
    """Load the newest loadable checkpoint into ``model``: ``{"epoch", "step", "weights"}``.

    ``None`` when there is none. ``step`` is the stream step recorded with that
    checkpoint (None only for a model without optimizer whose record has none).
    A checkpoint a kill interrupted is a temporary file (removed here) or a complete
    file ``state.json`` does not name yet (ignored). A damaged ``state.json``, or a
    checkpoint that fails its recorded sha256 or fails to load, is skipped with a
    warning naming the file; the previous checkpoint is tried next.
    """
    remove_partial_writes(directory)
    candidates, records = _candidates(directory)
    for i, (epoch, name) in enumerate(candidates):
        path = os.path.join(directory, name)
        try:
            _check_sha256(path, records.get(name))
            load_checkpoint(model, path)
            return {"epoch": int(epoch), "step": _step_of(model, records.get(name)),
                    "weights": name}
        except Exception as e:  # noqa: BLE001  (h5py OSError, Keras ValueError, ...)
            nxt = candidates[i + 1][1] if i + 1 < len(candidates) else None
            why = str(e) if isinstance(e, CheckpointError) else f"{type(e).__name__}: {e}"
            warnings.warn(f"Checkpoint {path} does not load ({why}); "
                          + (f"falling back to {nxt}." if nxt else "no older one is left."),
                          RuntimeWarning, stacklevel=2)
    if candidates:
        raise CheckpointError(
            f"No checkpoint in {directory} loads (tried {', '.join(n for _, n in candidates)}). "
            "Delete the directory to start afresh.")
    return None


def restore(model, directory):
    """Load the newest loadable checkpoint into ``model``; returns its epoch (0 if none).

    See :func:`restore_state` (which also returns the checkpoint's stream step).
    """
    state = restore_state(model, directory)
    return 0 if state is None else state["epoch"]


class ResumableCheckpoint(keras.callbacks.Callback):
    """Save model + optimizer atomically every ``every`` epochs or ``every_minutes``.

    Whichever comes first: ``every`` Keras epochs since the last save, or
    ``every_minutes`` of wall time (checked at epoch ends), so a preemption loses
    at most about that much work. The final epoch is always saved. The last
    ``keep`` checkpoints are kept.

    ``step_of(epochs_completed)``: the train stream's step at the end of that Keras
    epoch, recorded with the checkpoint (a resume starts there). Without it the
    optimizer's iteration count is recorded.
    """

    def __init__(self, directory, every=1, keep=2, every_minutes=None, step_of=None):
        super().__init__()
        self.directory = directory
        self.every = max(1, int(every))
        self.keep = max(1, int(keep))
        self.every_minutes = every_minutes
        self.step_of = step_of
        self._last_save = time.monotonic()
        self._last_epoch = None

    def on_train_begin(self, logs=None):
        self._last_save = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self._completed = epoch + 1
        timed = (self.every_minutes is not None
                 and time.monotonic() - self._last_save >= 60.0 * self.every_minutes)
        if self._completed % self.every == 0 or timed:
            self.save(self._completed)

    def on_train_end(self, logs=None):
        """The final epoch is always saved, whatever ``every`` is."""
        done = getattr(self, "_completed", None)
        if done is not None and self._last_epoch != done:
            self.save(done)

    def save(self, epoch):
        if not weights_are_finite(self.model):
            raise NonFiniteLossError(
                f"Weights became NaN/Inf by the end of epoch {epoch}; not overwriting the "
                f"last good checkpoint in {self.directory}.")
        os.makedirs(self.directory, exist_ok=True)
        name = checkpoint_name(epoch)
        digest = save_checkpoint(self.model, os.path.join(self.directory, name))
        state = {"epoch": int(epoch), "weights": name, "sha256": digest}
        step = self._step(epoch)
        if step is not None:
            state["step"] = step
        kept = [f for _, f in checkpoint_files(self.directory)[:self.keep]]
        records = _kept_records(self.directory, kept)
        records[name] = {k: state[k] for k in ("epoch", "step", "sha256") if k in state}
        write_json(os.path.join(self.directory, STATE_FILE), dict(state, checkpoints=records))
        self._last_save, self._last_epoch = time.monotonic(), epoch
        for _, stale in checkpoint_files(self.directory)[self.keep:]:
            os.remove(os.path.join(self.directory, stale))

    def _step(self, epoch):
        if self.step_of is not None:
            return int(self.step_of(epoch))
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            return int(keras.ops.convert_to_numpy(optimizer.iterations))
        return None


def _kept_records(directory, kept):
    """The records ``state.json`` holds for the files in ``kept`` (none if unreadable)."""
    try:
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as f:
            state = json.load(f)
        records = dict(state.get("checkpoints") or {})
        records.setdefault(state["weights"], {k: state[k] for k in ("epoch", "step", "sha256")
                                              if k in state})  # older kdzoo: newest only
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return {}
    return {k: v for k, v in records.items() if k in kept}


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop at the first non-finite loss and say which epoch, step and loss went bad."""

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for key, value in (logs or {}).items():
            if "loss" in key and value is not None and not math.isfinite(float(value)):
                raise NonFiniteLossError(
                    f"Loss {key!r} became {value} at epoch {getattr(self, '_epoch', 0) + 1}, "
                    f"step {batch + 1}. Lower the learning rate, check the data for NaNs, or "
                    "enable gradient clipping; the last good checkpoint was kept.")
