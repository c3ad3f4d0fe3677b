"""Where a study run's train time goes: input pipeline alone, step alone, and both (fit).

A diagnostic (not a benchmark: no goal, so ``tests/e2e/test_benchmarks.py`` skips
``_*.py``), written for issue 23 because a profiler on 2 shared cores was too slow
to use (``py-spy --native`` fell minutes behind). For one configuration of
``_study_worker.py`` (built by the tree's own runner) it times, in one process:

* ``pipeline_only``: iterating the train stream ``make_train(step)`` with no step;
* ``step_only``: ``model.fit`` on one batch of that stream repeated (no augmentation);
* ``fit``: ``model.fit`` on the real stream (what a study run does).

If ``fit`` is far below both others, the two compete for the cores (or wait on
each other) rather than one of them being slow. Each line carries images/s and
process CPU seconds / wall seconds (of 2 cores).

    PYTHONPATH=. python benchmarks/_study_profile.py funmatch --steps 20
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _bench  # noqa: E402
from _study_worker import CONFIGS, STUDY, build  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    parser.add_argument("config", choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed window")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three windows")
    args = parser.parse_args()
    import tensorflow as tf
    model, make_train = build(args.config, os.path.join(tempfile.mkdtemp(), "run"))
    n, images = args.steps, args.steps * STUDY["batch_size"]
    repeated = tf.data.Dataset.from_tensors(next(iter(make_train(0)))).repeat()
    model.fit(repeated, steps_per_epoch=2, epochs=1, verbose=0)  # traces
    windows = {
        "pipeline_only": lambda: [None for _ in make_train(0).take(n)],
        "step_only": lambda: model.fit(repeated, steps_per_epoch=n, epochs=1, verbose=0),
        "fit": lambda: model.fit(make_train(0), steps_per_epoch=n, epochs=1, verbose=0),
    }
    for _ in range(args.rounds):
        for what, fn in windows.items():
            rate, cpu = _bench.timed_cpu(fn, images)
            print(json.dumps({"config": args.config, "what": what,
                              "images_per_s": round(rate, 1), "cpu_over_wall": round(cpu, 2)}),
                  flush=True)


if __name__ == "__main__":
    main()
