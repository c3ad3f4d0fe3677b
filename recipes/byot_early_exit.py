"""Claim 5 of the BYOT table: early exit at a calibrated threshold, measured per SD run.

Why here and how: each finished ``self_distillation`` run's saved network
(``model.keras``, the last epoch) is calibrated on the 5,000 minival images (the
split its runs choose the best epoch on, ``train[55000:]`` of fashion_mnist_32,
which the 10,000-image training subset drawn from ``train[:55000]`` never touches)
with the setting docs/self_distillation.md's early-exit measurements use, fixed
before these runs: :func:`calibrate_thresholds` with ``max_loss=0.005,
confidence=0.9`` (the 90 % upper bound of the top-1 loss against the deepest exit
within 0.5 points, stable rule). Only then the 10,000 test images are read: top-1
of :class:`EarlyExit`, of the deepest exit and of the ensemble, the analytic FLOPs,
and the time of early exit and of the plain network on the same batches
(interleaved windows after a warm-up; wall and CPU seconds per window; the plain
network is the faster of the whole backbone and its sections chained, as
``benchmarks/self_distill.py``, so graph partitioning earns no credit).
"""

import time

import numpy as np

from kdzoo.train import study

CALIBRATION = dict(max_loss=0.005, confidence=0.9)
BATCH = 256  # the throughput batch of benchmarks/self_distill.py


def split_arrays(dataset, role, data_dir=None, image_size=32):
    """``(images float32 [N, S, S, C] in [0, 255], labels int64)`` of one split, read as the
    runs evaluate it (:func:`kdzoo.train.fit.eval_batches`)."""
    from kdzoo.data import get_spec, load_split
    from kdzoo.train.fit import eval_batches, eval_resize_small
    spec = get_spec(dataset)
    batches = eval_batches(load_split(spec, role, data_dir), image_size, 1000,
                           eval_resize_small(spec, image_size))
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in batches])
    return np.concatenate(xs).astype("float32"), np.concatenate(ys).astype("int64")


def load_network(run):
    """The run's saved ``SelfDistillation`` (``model.keras``)."""
    import keras
    import kdzoo  # noqa: F401  (registers kdzoo's Keras classes)
    from kdzoo.train.run_dir import model_file
    return keras.saving.load_model(model_file(run.workdir))


def _runners(sd, thresholds):
    """``{name: batch -> numpy logits}``: early exit, the whole backbone, its sections."""
    import tensorflow as tf
    from kdzoo.distill.self_distill.early_exit import EarlyExit
    ee = EarlyExit(sd, thresholds)

    def chained(t):
        for section in ee.sections:
            t = section(t, training=False)
        return ee.heads[-1](t, training=False)
    whole = tf.function(lambda t: sd.backbone(t, training=False), reduce_retracing=True)
    chain = tf.function(chained, reduce_retracing=True)
    return ee, {"early_exit": lambda b: ee(b)["logits"].numpy(),
                "whole": lambda b: whole(b).numpy(), "chained": lambda b: chain(b).numpy()}


def _window(fn, batches):
    """Wall and CPU (this process, all threads) seconds of one pass over ``batches``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        fn(b)
    return dict(wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu)


def time_runners(runners, images, repeats):
    """Interleaved windows (each runner in turn, ``repeats`` rounds) after one warm-up pass
    each; ``{name: [window]}``."""
    import tensorflow as tf
    batches = [tf.constant(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]
    for fn in runners.values():
        _window(fn, batches[:2])  # traces both batch shapes outside the timing
    windows = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            windows[name].append(_window(fn, batches))
    return windows


def speedups(windows):
    """Medians per runner; the plain network = the faster of whole and chained (wall)."""
    med = {n: {k: float(np.median([w[k] for w in ws])) for k in ("wall_s", "cpu_s")}
           for n, ws in windows.items()}
    plain = min(("whole", "chained"), key=lambda n: med[n]["wall_s"])
    return dict(windows=windows, median=med, baseline=plain,
                speedup_wall=med[plain]["wall_s"] / med["early_exit"]["wall_s"],
                speedup_cpu=med[plain]["cpu_s"] / med["early_exit"]["cpu_s"])


def _top1(logits, labels):
    return 100 * float(np.mean(np.asarray(logits).argmax(-1) == labels))


def figures_on_test(sd, ee, images, labels):
    """Test top-1 (%) of early exit, the deepest exit and the ensemble; FLOPs; exits."""
    exits = [np.asarray(z) for z in sd.predict(images, batch_size=BATCH, verbose=0)]
    stats = ee.predict(images, batch_size=BATCH)
    ee_top1, deep = _top1(stats["logits"], labels), _top1(exits[-1], labels)
    ens = _top1(np.mean(exits, 0), labels)
    return dict(early_exit_top1=ee_top1, deepest_top1=deep, ensemble_top1=ens,
                loss_vs_deepest_points=deep - ee_top1, loss_vs_ensemble_points=ens - ee_top1,
                exit_fractions=stats["exit_fractions"], avg_flops=stats["avg_flops"],
                full_flops=ee.flops["full"], flops_fraction=stats["flops_fraction"],
                flops_saving=1 - stats["flops_fraction"])


def measure_network(sd, minival, test, repeats=3):
    """Claim 5 on one network: calibrate on ``minival`` (images, labels) only, then measure
    on ``test``; the test labels are read after the thresholds are fixed."""
    from kdzoo.distill.self_distill.exit_calibration import calibrate_thresholds
    cal = calibrate_thresholds(sd, *minival, **CALIBRATION)
    ee, runners = _runners(sd, cal["thresholds"])
    return dict(thresholds=cal["thresholds"], test=figures_on_test(sd, ee, *test),
                minival={k: cal[k] for k in ("accuracy", "loss", "loss_bound", "met",
                                             "flops_fraction")},
                timing=speedups(time_runners(runners, test[0], repeats)))


def measure_all(s, entries, data_dir=None, repeats=3):
    """Claim 5 over every finished self_distillation run of ``entries``."""
    if repeats < 1:
        return dict(skipped=f"--early_exit_repeats={repeats}: early exit not measured")
    done = [(k, r) for k, r in entries
            if k["method"] == "self_distillation" and r is not None and study.is_finished(r)]
    data = [split_arrays(s["dataset"], role, data_dir, s["image_size"])
            for role in ("minival", "test")] if done else None
    runs = [dict(arch=k["arch"], seed=k["seed"], workdir=r.workdir,
                 **measure_network(load_network(r), *data, repeats=repeats)) for k, r in done]
    return dict(runs=runs, settings=dict(calibration=CALIBRATION, batch_size=BATCH,
                                         repeats=repeats, weights="model.keras (last epoch)",
                                         calibrated_on="minival (5,000 images)"))
