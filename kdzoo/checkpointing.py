"""Checkpoints that survive preemption, and a guard against non-finite losses.

A checkpoint is ``ckpt-EEEEEE.weights.h5`` (model *and* optimizer state) plus
``state.json`` naming the newest complete one. Both are written to a temporary
file and renamed, weights first, so a kill at any moment leaves ``state.json``
pointing at a complete file; the previous checkpoint is kept until the next
one is complete. Training data must be a pure function of (seed, epoch) for a
resumed run to see exactly what an uninterrupted run would have seen.
"""

import json
import math
import os

import keras
import numpy as np

from kdzoo.atomic import TEMP_PREFIX, save_weights, write_json  # noqa: F401  (write_json re-exported)

STATE_FILE = "state.json"


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss becomes NaN or Inf."""


def read_state(directory):
    """``{"epoch": E, "weights": file}`` of the newest complete checkpoint, or None."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    if not os.path.exists(os.path.join(directory, state["weights"])):
        raise FileNotFoundError(
            f"{path} names {state['weights']}, which is missing; the checkpoint directory "
            "was modified by hand. Delete the directory to start afresh.")
    return state


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


def restore(model, directory):
    """Load the newest checkpoint into ``model``; returns the epoch to start from (0 if none).

    Only what ``state.json`` names is read: a checkpoint a kill interrupted is a
    temporary file (removed here) or a complete file ``state.json`` does not name yet.
    """
    remove_partial_writes(directory)
    state = read_state(directory)
    if state is None:
        return 0
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(directory, state["weights"]))
    return int(state["epoch"])


class ResumableCheckpoint(keras.callbacks.Callback):
    """Save model + optimizer every ``every`` epochs, atomically; keep the last ``keep``."""

    def __init__(self, directory, every=1, keep=2):
        super().__init__()
        self.directory = directory
        self.every = max(1, int(every))
        self.keep = max(2, int(keep))

    def on_epoch_end(self, epoch, logs=None):
        self._completed = epoch + 1
        if self._completed % self.every == 0:
            self.save(self._completed)

    def on_train_end(self, logs=None):
        """The final epoch is always saved, whatever ``every`` is."""
        done = getattr(self, "_completed", None)
        state = read_state(self.directory)
        if done is not None and (state is None or state["epoch"] < done):
            self.save(done)

    def save(self, epoch):
        if not weights_are_finite(self.model):
            raise NonFiniteLossError(
                f"Weights became NaN/Inf by the end of epoch {epoch}; not overwriting the "
                f"last good checkpoint in {self.directory}.")
        os.makedirs(self.directory, exist_ok=True)
        name = f"ckpt-{epoch:06d}.weights.h5"
        save_weights(self.model, os.path.join(self.directory, name))
        write_json(os.path.join(self.directory, STATE_FILE), {"epoch": epoch, "weights": name})
        old = sorted(f for f in os.listdir(self.directory)
                     if f.startswith("ckpt-") and f.endswith(".weights.h5"))
        for stale in old[:-self.keep]:
            os.remove(os.path.join(self.directory, stale))


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
