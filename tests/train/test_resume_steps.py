"""Resume at the checkpoint's recorded stream step, whatever the new interval (issue item 2),
one history.csv row per Keras epoch after a kill, and a killed writer's temp files
removed on the next start (item 10).

The runner's fit (``kdzoo.train.run_body._fit``) is driven with a tiny model whose train step
counts the stream positions it is fed (each batch carries its position as its input),
so a test can check which positions were trained and how often, and the optimizer's
iteration count, across a "kill" (an exception out of ``fit``) and a resume.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdzoo.train.run_body import _fit
from kdzoo.train.runner import make_schedule

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


# ------------------------------------------------------------ leftovers -------
ATOMIC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "kdzoo", "atomic.py")
# A writer killed inside kdzoo.atomic.atomic_path (loaded alone: no TensorFlow import).
KILLED_WRITER = r"""
import importlib.util, os, signal, sys
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
with atomic.atomic_path(sys.argv[2], ".tcache") as tmp:
    with open(tmp, "wb") as f:
        f.write(b"partial" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)
"""
# Holds a flock on argv[1] as kdzoo.file_lock does (its pid and host inside), until killed.
LIVE_HOLDER = r"""
import fcntl, json, os, socket, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
print("held", flush=True)
time.sleep(600)
"""


def _killed_write(path):
    """What a writer of ``path`` killed mid-write leaves: its temp file's name."""
    before = set(os.listdir(os.path.dirname(path)))
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, ATOMIC, str(path)])
    assert done.returncode == -signal.SIGKILL
    (left,) = set(os.listdir(os.path.dirname(path))) - before
    return left


def _planted(tmp_path):
    """A dead writer's partial cache, plus temp files that are not that entry's."""
    cache = tmp_path / "teacher.tcache"
    left = _killed_write(cache)
    for other in (".tmp-other.tcache-abc.tcache", ".tmp-mine"):  # not this entry's
        (tmp_path / other).write_text("keep")
    return cache, left


def test_writer_lock_removes_a_dead_writers_temp_file_only(tmp_path):
    from kdzoo.atomic import writer_lock
    cache, left = _planted(tmp_path)
    with writer_lock(str(cache)):
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == [
            ".tmp-mine", ".tmp-other.tcache-abc.tcache"], left
        with writer_lock(str(cache)):  # our caller holds it already (the recipes' grid)
            pass


def test_writer_lock_leaves_the_temp_files_of_a_live_writer(tmp_path):
    from kdzoo.atomic import writer_lock
    cache, left = _planted(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", LIVE_HOLDER, f"{cache}.lock"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with writer_lock(str(cache)):
            assert (tmp_path / left).exists()  # it may be that live writer's file
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((tmp_path / "teacher.tcache.lock").read_text() or "{}").get("pid") \
        == holder.pid  # not taken over while it was alive


@pytest.mark.slow
def test_write_teacher_cache_removes_a_killed_writes_partial_cache(tmp_path):
    import tensorflow_datasets as tfds

    from kdzoo.models.bit import tiny_bit
    from kdzoo.train import FunMatchRun, write_teacher_cache
    cache, left = _planted(tmp_path)
    model = (lambda: tiny_bit(37, (32, 32, 3)))
    run = FunMatchRun(dataset="pets", teacher=model, student=model, workdir=str(tmp_path),
                      epochs=1, batch_size=8, image_size=32, num_train_examples=16, seed=3)
    with tfds.testing.mock_data(num_examples=16):
        written = write_teacher_cache(run, str(cache))
    assert written.epochs == (0, 1)  # 16 images at batch 8, 1 epoch: the whole schedule
    names = sorted(p.name for p in tmp_path.iterdir())
    assert left not in names and ".tmp-mine" in names and ".tmp-other.tcache-abc.tcache" in names
