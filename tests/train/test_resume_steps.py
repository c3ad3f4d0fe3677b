"""Resume at the checkpoint's recorded stream step, whatever the new interval (issue item 2),
and one history.csv row per Keras epoch after a kill (item 10).

The runner's fit (``kdzoo.train._fit``) is driven with a tiny model whose train step
counts the stream positions it is fed (each batch carries its position as its input),
so a test can check which positions were trained and how often, and the optimizer's
iteration count, across a "kill" (an exception out of ``fit``) and a resume.
"""

import csv
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdzoo.train import _fit, make_schedule

SIZE = 64  # stream positions counted


class Killed(Exception):
    pass


class _KillAt(keras.callbacks.Callback):
    """Raise before the ``at``-th batch this process trains (1-based): a preemption."""

    def __init__(self, at):
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.at:
            raise Killed(f"killed before batch {self.at}")


def probe(seen, kill_at=None, seed=0):
    """A compiled one-Dense model that adds 1 to ``seen[position]`` per trained batch."""

    class Probe(keras.Model):
        def train_step(self, data):
            x, _ = data
            seen.assign_add(tf.one_hot(tf.cast(x[0, 0], tf.int32), SIZE, dtype=tf.int32))
            return super().train_step(data)

        def fit(self, *args, callbacks=None, **kwargs):
            extra = [_KillAt(kill_at)] if kill_at else []
            return super().fit(*args, callbacks=[*(callbacks or []), *extra], **kwargs)

    keras.utils.set_random_seed(seed)
    x = keras.Input((1,))
    model = Probe(x, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=False)
    return model


def stream(step):
    """Batches of 2 whose input is their stream position: ``step, step + 1, ...``."""
    positions = tf.data.Dataset.range(step, SIZE)
    return positions.map(lambda i: (tf.fill([2, 1], tf.cast(i, tf.float32)), tf.zeros([2, 1])))


def fit(model, workdir, epochs, log_every, checkpoint_every):
    # 8 examples at batch 4: round(epochs * 8 / 4) = 2 * epochs steps in all.
    schedule = make_schedule(epochs, 8, 4, log_every_steps=log_every,
                             checkpoint_every_steps=checkpoint_every)
    run = types.SimpleNamespace(workdir=str(workdir), checkpoint_every_minutes=None,
                                keep_checkpoints=3, verbose=0)
    _fit(model, stream, run, schedule)
    return schedule


def _iterations(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def _history_epochs(workdir):
    with open(workdir / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_epochs_may_grow_the_resume_trains_to_the_new_end(tmp_path):
    seen = tf.Variable(tf.zeros([SIZE], tf.int32))
    first = probe(seen)
    assert fit(first, tmp_path, 1, 100, 100).total_steps == 2  # one data epoch: 2 steps
    assert _iterations(first) == 2
    # --epochs 4 on the same workdir: 8 steps in all, one Keras epoch of 8 now.
    again = probe(seen, seed=5)
    assert fit(again, tmp_path, 4, 100, 100).total_steps == 8
    assert _iterations(again) == 8  # the 6 new steps were trained ...
    counts = seen.numpy()
    np.testing.assert_array_equal(counts[:8], np.ones(8))  # ... on positions 2..7, once
    assert counts[8:].sum() == 0


def test_kill_with_interval_1_resume_with_interval_2_continues_at_the_recorded_step(tmp_path):
    seen = tf.Variable(tf.zeros([SIZE], tf.int32))
    # Intervals of 1 step, a checkpoint after each; killed before the third batch (step 2).
    with pytest.raises(Killed):
        fit(probe(seen, kill_at=3), tmp_path, 4, 1, 1)
    np.testing.assert_array_equal(seen.numpy()[:3], [1, 1, 0])
    again = probe(seen, seed=5)
    fit(again, tmp_path, 4, 2, 2)  # the rerun logs and checkpoints every 2 steps
    assert _iterations(again) == 8  # the optimizer's count and the stream agree
    counts = seen.numpy()
    np.testing.assert_array_equal(counts[:8], np.ones(8))  # positions 2 and 3 included
    assert counts[8:].sum() == 0
    # Keras epochs 0, 1 (1 step each) then 2, 3, 4 (2 steps each): one row each.
    assert _history_epochs(tmp_path) == [0, 1, 2, 3, 4]


def test_history_has_one_row_per_epoch_after_a_kill_past_the_last_checkpoint(tmp_path):
    seen = tf.Variable(tf.zeros([SIZE], tf.int32))
    # Epochs of 1 step, a checkpoint every 2: killed before the 4th batch, after epoch 2
    # (0-based) wrote its row but before its progress reached a checkpoint (at 2 steps).
    with pytest.raises(Killed):
        fit(probe(seen, kill_at=4), tmp_path, 2, 1, 2)
    assert _history_epochs(tmp_path) == [0, 1, 2]
    again = probe(seen, seed=5)
    fit(again, tmp_path, 2, 1, 2)
    assert _iterations(again) == 4
    # Epoch 2 was trained twice (its first run was lost with the kill), its row kept once.
    np.testing.assert_array_equal(seen.numpy()[:5], [1, 1, 2, 1, 0])
    assert _history_epochs(tmp_path) == [0, 1, 2, 3]
