"""Where a study run's train time goes: input pipeline alone, step alone, and both (fit).

A diagnostic (not a benchmark: no goal, so ``tests/e2e/test_benchmarks.py`` skips
``_*.py``), written for issue 23 because a profiler on 2 shared cores was too slow
to use (``py-spy --native`` fell minutes behind). For one configuration of
``_study_worker.py`` (built by the tree's own runner) it times, in one process:

* ``pipeline_only``: iterating the train stream ``make_train(step)`` with no step;
* ``step_only``: ``model.fit`` on one batch of that stream repeated (no augmentation);
* ``fit``: ``model.fit`` on the real stream (what a study run does).

With ``--render both`` the ``pipeline_only`` and ``fit`` windows
run for each rendering of the train crops, side by side in one process and round:
``batched`` (boxes per image, rendering per batch: ``kdzoo.data.batched_crops``)
and ``per_image`` (the earlier ``crop_resize`` map), chosen before the stream is
built (the distiller's ``views.batched_render``; ``labeled_stream(batched_render=)``
for the supervised configs).

If ``fit`` is far below both others, the two compete for the cores (or wait on
each other) rather than one of them being slow. Each line carries images/s and
process CPU seconds / wall seconds (of 2 cores).

    PYTHONPATH=. python benchmarks/_study_profile.py funmatch --steps 20 --render both
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
    parser.add_argument("--render", choices=("default", "both"), default="default",
                        help="'both': time the stream with batched and per-image crop "
                             "rendering, side by side")
    args = parser.parse_args()
    import tensorflow as tf
    import functools

    from kdzoo.data import stream as kdzoo_stream
    from kdzoo.train import runner
    model, make_train = build(args.config, os.path.join(tempfile.mkdtemp(), "run"))
    views = getattr(model, "views", None)
    renders = ("batched", "per_image") if args.render == "both" else (None,)

    def stream(render, step=0):
        if render is not None:
            batched = render == "batched"
            if views is not None:  # FunMatch: the distiller's ViewMaker
                views.batched_render = batched
            else:  # supervised: run_supervised's make_train calls runner.labeled_stream
                runner.labeled_stream = functools.partial(kdzoo_stream.labeled_stream,
                                                          batched_render=batched)
        return make_train(step)

    n, images = args.steps, args.steps * STUDY["batch_size"]
    repeated = tf.data.Dataset.from_tensors(next(iter(stream(renders[0])))).repeat()
    model.fit(repeated, steps_per_epoch=2, epochs=1, verbose=0)  # traces
    windows = [("step_only", None,
                lambda r: model.fit(repeated, steps_per_epoch=n, epochs=1, verbose=0))]
    for render in renders:
        windows += [
            ("pipeline_only", render, lambda r: [None for _ in stream(r).take(n)]),
            ("fit", render, lambda r: model.fit(stream(r), steps_per_epoch=n, epochs=1,
                                                verbose=0)),
        ]
    for _ in range(args.rounds):
        for what, render, fn in windows:
            rate, cpu = _bench.timed_cpu(lambda: fn(render), images)
            line = {"config": args.config, "what": what, "images_per_s": round(rate, 1),
                    "cpu_over_wall": round(cpu, 2)}
            if render is not None:
                line["render"] = render
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
