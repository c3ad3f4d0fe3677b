"""Recipe runner overhead: ``kdzoo.train``'s resumable fit vs a bare loop of the same steps.

The flowers102 shape scaled down: N = 1,020 train images and batch 512 (about
two steps per data epoch, so a window crosses many data epochs and a partial
batch continues into the next epoch), with tiny models at 32 px so the runner's
own costs are not hidden behind a big network. Both sides run the same
``FunMatchDistiller`` train step on the same stream (``make_train_dataset``:
per-image views and mixup rendered by ``tf.data``):

* ``runner``: what a recipe runs (``kdzoo.train``'s schedule through
  ``fit_resumable``): Keras ``fit`` in log intervals of ``log_every`` steps,
  the checkpoint callback (student + optimizer, written once at the end of the
  window, as at the end of a run; mid-run saves are thousands of steps apart),
  the non-finite-loss guard, TensorBoard and CSV logging, a fresh workdir per
  window.
* ``bare``: ``tf.function(distiller.train_step)`` in a Python loop over the
  same stream, nothing else.

Windows alternate; figures are medians after one warm-up round (which traces
both). Prints ONE JSON line: ``ratio`` = bare / runner seconds per step, i.e.
the inverse of the overhead (goal >= 1 / 1.10); ``overhead`` = runner / bare
(goal <= 1.10).

    python benchmarks/runner_overhead.py [--quick]
"""

import _bench  # noqa: F401  (sys.path, TF log level)

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdzoo.distill import FunMatchDistiller  # noqa: E402
from kdzoo.train.run_body import _fit  # noqa: E402
from kdzoo.train.runner import FunMatchRun, make_schedule  # noqa: E402

GOAL = 1.10


def tiny(name, seed, size=32, classes=102):
    keras.utils.set_random_seed(seed)
    x = keras.Input((size, size, 3))
    y = keras.layers.Rescaling(1 / 255.0)(x)
    y = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(y)
    y = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(classes)(y), name=name)


def main():
    args = _bench.parse_args(__doc__)
    n, batch, steps, log_every, windows = ((128, 64, 16, 4, 2) if args.quick
                                           else (1020, 512, 60, 20, 3))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)
    d = FunMatchDistiller(tiny("teacher", 1), tiny("student", 2), variant="funmatch",
                          image_size=32, seed=0, temperature=2.0)
    d.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0))
    epochs = steps * batch / n  # data epochs per window
    schedule = make_schedule(epochs, n, batch, log_every_steps=log_every,
                             checkpoint_every_steps=5000)
    assert schedule.total_steps == steps, schedule
    root = tempfile.mkdtemp(prefix="kdzoo-runner-bench-")
    count = [0]

    def runner():
        workdir = os.path.join(root, f"w{count[0]}")
        count[0] += 1
        run = FunMatchRun(dataset="flowers102", teacher=None, student=None, workdir=workdir,
                          epochs=epochs, batch_size=batch, verbose=0,
                          log_every_steps=log_every, checkpoint_every_steps=5000)
        start = time.perf_counter()
        _fit(d, lambda step: d.make_train_dataset(images, batch, initial_step=step,
                                                  num_images=n), run, schedule)
        elapsed = time.perf_counter() - start
        shutil.rmtree(workdir, ignore_errors=True)
        return steps / elapsed

    step_fn = tf.function(d.train_step)

    def bare():
        start = time.perf_counter()
        logs = None
        for b in d.make_train_dataset(images, batch, num_images=n).take(steps):
            logs = step_fn(b)
        float(logs["loss"])  # wait for the last step
        return steps / (time.perf_counter() - start)

    rates = _bench.interleaved({"runner": runner, "bare": bare}, windows)
    shutil.rmtree(root, ignore_errors=True)
    runner_sps, bare_sps = _bench.median(rates["runner"]), _bench.median(rates["bare"])
    overhead = bare_sps / runner_sps
    _bench.emit({
        "benchmark": "runner_overhead",
        "what": "recipe runner (fit_resumable over the step schedule, checkpoint at end, "
                "logging) vs bare tf.function loop, same FunMatch steps and stream; "
                f"N={n}, batch={batch}, {steps} steps = {epochs:.1f} data epochs per window",
        "runner_steps_per_s": round(runner_sps, 3), "bare_steps_per_s": round(bare_sps, 3),
        "overhead": round(overhead, 4), "overhead_goal": GOAL,
        "ratio": round(1.0 / overhead, 4), "goal": round(1.0 / GOAL, 4),
        "goal_met": bool(overhead <= GOAL), "quick": bool(args.quick)})


if __name__ == "__main__":
    main()
