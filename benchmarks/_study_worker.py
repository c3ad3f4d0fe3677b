"""One study configuration, built by kdzoo's own runner, timed window by window on request.

Run by ``benchmarks/study_speed.py`` as a subprocess, once with the current tree
and once with a git worktree of the baseline commit on ``PYTHONPATH``: this file
only calls what both trees have (``kdzoo.train.FunMatchRun`` / ``SupervisedRun``,
``run_funmatch`` / ``run_supervised`` and their ``_fit``), so the two sides build
the model, compile it and make the train stream exactly as their runner does.

How: the ``_fit`` the tree's run body calls (``kdzoo.train.run_body._fit``; in older trees
``kdzoo.train.runner._fit`` or ``kdzoo.train._fit``) is replaced by a function that keeps
``(model, make_train)`` and stops the run there (before any step, evaluation or export).
Each ``window K`` line on stdin then trains K more steps of that very stream
(``model.fit(make_train(step), steps_per_epoch=K)``, the stream continuing where the
last window stopped) and answers one JSON line: images/s, process CPU seconds /
wall seconds, and the steps. What is timed is the steady-state training step with
its input pipeline; tracing is the first window (reported, not in the medians);
checkpoints, logging callbacks and evaluation are not timed here
(``benchmarks/runner_overhead.py`` measures those: 1.6 %).

    PYTHONPATH=<tree> python benchmarks/_study_worker.py funmatch   # then: window 20
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The Fashion-MNIST study's settings (recipes/fashion_mnist.py STUDY), fixed here so
# both trees run the same configuration whatever their recipe says.
STUDY = dict(teacher="fmnist_cnn_w32.kdzoo_teacher_full", student="fmnist_cnn_w16",
             train_per_class=100, subset_seed=0, batch_size=128, lr=3e-3, weight_decay=1e-4,
             warmup_fraction=0.05, temperature=1.0, inception_area_range=(0.25, 1.0))
EPOCHS = 100  # the demo's larger budget: 781 steps (the schedule only sets the lr curve)
CONFIGS = ("labels", "fix/rs", "same/ic", "funmatch", "self_distillation", "byot_resnet18")
BYOT_WIDTH = 16  # CIFAR ResNet-18 at 1/4 width (the self-distillation benchmark's)


class _Captured(Exception):
    pass


def _optimizer(total):
    from kdzoo.distill import paper_optimizer
    return paper_optimizer(STUDY["lr"], total, round(STUDY["warmup_fraction"] * total),
                           STUDY["weight_decay"])


def _new_or_old(new, old):
    """Module ``new`` (the package layout since issue 26) or ``old`` (the flat layout of the
    ``--baseline`` tree, e.g. 020116a): the worker imports whichever tree it runs in."""
    import importlib
    try:
        return importlib.import_module(new)
    except ImportError:
        return importlib.import_module(old)


def _resnet18():
    architectures = _new_or_old("kdzoo.zoo.registry", "kdzoo.registry").architectures
    return architectures()["cifar_resnet18"].builder(
        num_classes=10, include_top=True, input_shape=(32, 32, 1), pooling=None,
        base_width=BYOT_WIDTH)


def make_run(config, workdir):
    """The study's run of ``config`` (its real batch, image size and augmentation)."""
    import functools

    from kdzoo import load
    from kdzoo.train import FunMatchRun, SupervisedRun, total_steps
    s = STUDY
    shared = dict(dataset="fashion_mnist", workdir=workdir, epochs=EPOCHS, seed=0,
                  batch_size=s["batch_size"], train_per_class=s["train_per_class"],
                  subset_seed=s["subset_seed"], verbose=0, eval_roles=())
    student = functools.partial(load, s["student"], weights=None)
    if config == "byot_resnet18":  # BYOT's CIFAR recipe: pad-4 crop (fill 128) + flip, 32 px
        return SupervisedRun(model=_resnet18, optimizer=_optimizer, method="self_distillation",
                             image_size=32, crop="pad", pad_fill=128, **shared)
    if config in ("labels", "self_distillation"):
        return SupervisedRun(model=student, optimizer=_optimizer, crop="inception",
                             inception_area_range=s["inception_area_range"], method=config,
                             **shared)
    n = 10 * s["train_per_class"]
    warmup = round(s["warmup_fraction"] * total_steps(EPOCHS, n, s["batch_size"]))
    return FunMatchRun(teacher=functools.partial(load, s["teacher"]), student=student,
                       variant=config, temperature=s["temperature"], lr=s["lr"],
                       weight_decay=s["weight_decay"], image_size=28, warmup_steps=warmup,
                       distiller_kwargs=dict(inception_area_range=s["inception_area_range"]),
                       **shared)


def build(config, workdir):
    """``(model, make_train)`` exactly as the tree's runner builds them."""
    train = _new_or_old("kdzoo.train.runner", "kdzoo.train")
    body = _new_or_old("kdzoo.train.run_body", train.__name__)  # the module calling _fit
    run = make_run(config, workdir)
    kept = {}

    def capture(model, make_train, run, schedule):
        kept.update(model=model, make_train=make_train)
        raise _Captured()

    body._fit = capture
    try:
        (train.run_funmatch if hasattr(run, "variant") else train.run_supervised)(run)
    except _Captured:
        pass
    return kept["model"], kept["make_train"]


def main():
    config = sys.argv[1]
    if config not in CONFIGS:
        sys.exit(f"_study_worker.py: unknown config {config!r}; choose from {CONFIGS}.")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="study_speed_") as tmp:
        model, make_train = build(config, os.path.join(tmp, "run"))
        import kdzoo
        print(json.dumps({"ready": True, "setup_s": round(time.perf_counter() - t0, 2),
                          "kdzoo": os.path.dirname(kdzoo.__file__)}), flush=True)
        step = 0
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "quit":
                break
            steps = int(words[1])
            data = make_train(step)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
            wall = time.perf_counter() - wall0
            step += steps
            batch = STUDY["batch_size"]
            print(json.dumps({"images_per_s": steps * batch / wall, "wall_s": round(wall, 3),
                              "cpu_over_wall": round((time.process_time() - cpu0) / wall, 3),
                              "steps": steps}), flush=True)


if __name__ == "__main__":
    main()
