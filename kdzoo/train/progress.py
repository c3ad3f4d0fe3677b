"""Where a long run is: step / total, images per second and the ETA of the whole run.

Why: Keras' progress bar counts Keras epochs (here logging intervals), so a
2-million-step run printed "Epoch 7/4000" and never when it would end. The
:class:`Progress` callback prints one line per Keras epoch with the global step,
the throughput measured since this process started (so a resumed run counts
from its resumed step, not from 0) and the wall-clock end of the run.
"""

import datetime
import time

import keras
from keras.src.utils import io_utils

__all__ = ["Progress", "format_duration"]


def format_duration(seconds):
    """``3d 04:05:06`` / ``04:05:06``: whole seconds, days shown only when there are any."""
    s = int(round(max(0.0, float(seconds))))
    days, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{days}d {text}" if days else text


class Progress(keras.callbacks.Callback):
    """Print ``step S/T (P%) | N img/s | ETA D (ends UTC)`` after every Keras epoch.

    ``step_of(epoch)``: the global step at the start of Keras epoch ``epoch`` (the
    schedule's), ``start_step``: the step this process resumed from. ``clock`` (a
    monotonic clock), ``wall`` (epoch seconds) and ``print_fn`` are injectable so a
    test can fix the times. The rate is taken over everything since the first
    ``on_train_begin`` (evaluation and checkpoints included), which is what the
    remaining steps will cost too.
    """

    def __init__(self, total_steps, step_of, *, start_step=0, batch_size=None,
                 clock=time.monotonic, wall=time.time, print_fn=io_utils.print_msg):
        super().__init__()
        self.total_steps, self.step_of = int(total_steps), step_of
        self.start_step, self.batch_size = int(start_step), batch_size
        self.clock, self.wall, self.print_fn = clock, wall, print_fn
        self._t0 = None

    def on_train_begin(self, logs=None):
        if self._t0 is None:  # fit is called once per leg; time the whole run
            self._t0 = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        self.print_fn(self.line(self.step_of(epoch + 1)))

    def line(self, step):
        """The progress text at global step ``step``."""
        done, elapsed = step - self.start_step, self.clock() - self._t0
        parts = [f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.1f}%)"]
        if done <= 0 or elapsed <= 0:
            return parts[0]
        rate = done / elapsed
        if self.batch_size:
            parts.append(f"{rate * self.batch_size:.1f} img/s")
        left = (self.total_steps - step) / rate
        end = datetime.datetime.fromtimestamp(self.wall() + left, datetime.timezone.utc)
        parts.append(f"ETA {format_duration(left)} (ends {end:%Y-%m-%d %H:%M} UTC)")
        return " | ".join(parts)
