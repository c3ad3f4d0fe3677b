"""CPU milliseconds per batch of a study run's train stream alone: batched vs per-image render.

A diagnostic for issue 23 (not a benchmark with a goal: ``_*.py`` files are skipped by
``tests/e2e/test_benchmarks.py``). On a loaded machine images/s mostly measures the
share of the cores this process got; process CPU time per batch is the work the
input pipeline does, which load changes much less. For one ``_study_worker.py``
configuration it builds the runner's stream with each rendering in turn (the
distiller's ``views.batched_render``, or ``labeled_stream(batched_render=)`` for the
supervised configs), skips 5 batches (tracing, buffers) and reads ``steps`` more,
``--rounds`` times, alternating. One JSON line per window.

    PYTHONPATH=. python benchmarks/_render_cpu.py funmatch --steps 60
"""

import argparse
import functools
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _study_worker import CONFIGS, STUDY, build  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    parser.add_argument("config", choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=60, help="batches per timed window")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from kdzoo.data import stream as kdzoo_stream
    from kdzoo.train import runner
    model, make_train = build(args.config, os.path.join(tempfile.mkdtemp(), "run"))
    views = getattr(model, "views", None)

    def make(batched):
        if views is not None:
            views.batched_render = batched
        else:  # run_supervised's make_train calls runner.labeled_stream
            runner.labeled_stream = functools.partial(kdzoo_stream.labeled_stream,
                                                      batched_render=batched)
        return make_train(0)

    batch = STUDY["batch_size"]
    for _ in range(args.rounds):
        for batched in (True, False):
            it = iter(make(batched))
            for _ in range(5):
                next(it)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                next(it)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            print(json.dumps({"config": args.config,
                              "render": "batched" if batched else "per_image",
                              "images_per_s": round(args.steps * batch / wall, 1),
                              "cpu_ms_per_batch": round(1000 * cpu / args.steps, 2),
                              "cpu_over_wall": round(cpu / wall, 2)}), flush=True)


if __name__ == "__main__":
    main()
