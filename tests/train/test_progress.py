"""Long runs say where they are (issue 27): step / total, images/s and the ETA of the
whole run in every training log line, counted from the step a resumed run starts at.

The times are injected (a fake monotonic clock and wall clock), so the ETA arithmetic
is asserted exactly; the expected figures are worked out by hand in the comments.
"""

import keras
import numpy as np
import tensorflow as tf

from kdzoo.train.fit import fit_schedule, make_schedule
from kdzoo.train.progress import Progress, format_duration


class Clock:
    def __init__(self, *times):
        self.times = list(times)

    def __call__(self):
        return self.times.pop(0)


def _progress(clock_times, *, total=2_000_000, start_step=1_000, batch=512):
    lines = []
    p = Progress(total, lambda epoch: start_step + epoch * 1_000, start_step=start_step,
                 batch_size=batch, clock=Clock(*clock_times), wall=lambda: 0.0,
                 print_fn=lines.append)
    return p, lines


def test_a_two_million_step_run_says_when_it_ends():
    # Resumed at step 1,000; one Keras epoch of 1,000 steps took 1,000 s: 1 step/s,
    # 512 img/s; 2,000,000 - 2,000 = 1,998,000 s left = 23 days (1,987,200 s) + 3 h.
    p, lines = _progress([100.0, 1_100.0])
    p.on_train_begin()
    p.on_epoch_end(0)
    assert lines == ["step 2000/2000000 (0.1%) | 512.0 img/s | "
                     "ETA 23d 03:00:00 (ends 1970-01-24 03:00 UTC)"]


def test_the_rate_is_over_the_whole_process_not_only_the_last_epoch():
    # Second leg's on_train_begin keeps the first start (t=0). After Keras epoch 1 the
    # run is at step 3,000: 2,000 steps in 20 s = 100 steps/s = 51,200 img/s;
    # 1,997,000 steps left / 100 = 19,970 s = 5 h 32 min 50 s.
    p, lines = _progress([0.0, 10.0, 20.0])
    p.on_train_begin()
    p.on_epoch_end(0)
    p.on_train_begin()
    p.on_epoch_end(1)
    assert lines[1] == ("step 3000/2000000 (0.1%) | 51200.0 img/s | "
                        "ETA 05:32:50 (ends 1970-01-01 05:32 UTC)")


def test_without_batch_size_or_elapsed_time_nothing_is_invented():
    lines = []
    p = Progress(10, lambda e: e * 5, clock=Clock(0.0, 0.0, 4.0), wall=lambda: 0.0,
                 print_fn=lines.append)
    p.on_train_begin()
    p.on_epoch_end(0)  # no time has passed: no rate, no ETA
    p.on_epoch_end(1)  # at the end: 10 steps in 4 s, nothing left
    assert lines == ["step 5/10 (50.0%)", "step 10/10 (100.0%) | ETA 00:00:00 "
                     "(ends 1970-01-01 00:00 UTC)"]


def test_format_duration():
    assert format_duration(59.6) == "00:01:00"
    assert format_duration(86_400 * 2 + 3_661) == "2d 01:01:01"
    assert format_duration(-5) == "00:00:00"


def _tiny():
    x = keras.Input((1,))
    model = keras.Model(x, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=False)
    return model


def _stream(step):
    return tf.data.Dataset.from_tensors((np.zeros([4, 1], "float32"),
                                         np.zeros([4, 1], "float32"))).repeat()


def test_fit_schedule_logs_the_run_steps_and_a_resume_counts_from_its_step(tmp_path, capsys):
    # 3 data epochs of 8 examples at batch 4: 6 steps, logged every 2.
    schedule = make_schedule(3, 8, 4, log_every_steps=2, checkpoint_every_steps=2)
    fit_schedule(_tiny(), _stream, make_schedule(1, 8, 4, log_every_steps=2,
                                                  checkpoint_every_steps=2),
                 workdir=str(tmp_path), verbose=2, batch_size=4)
    first = [l for l in capsys.readouterr().out.splitlines() if l.startswith("step ")]
    assert [l.split(" | ")[0] for l in first] == ["step 2/2 (100.0%)"]
    fit_schedule(_tiny(), _stream, schedule, workdir=str(tmp_path), verbose=2, batch_size=4)
    again = [l for l in capsys.readouterr().out.splitlines() if l.startswith("step ")]
    assert [l.split(" | ")[0] for l in again] == ["step 4/6 (66.7%)", "step 6/6 (100.0%)"]
    assert all("img/s" in l and "ETA" in l for l in again)
