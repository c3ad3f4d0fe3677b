"""The grid pays for the teacher once: a hyper-parameter grid online vs from one shared cache.

A FunMatch grid (lr x T, plus an epochs axis in full mode, as the authors'
``bigsweep_food_sun.get_hyper``; T alone under ``--quick``) on real Fashion-MNIST
at 28 px, student ``fmnist_cnn_w16``, teacher the same family at a width whose forward pass
costs about 5x the student's (measured and reported as
``teacher_forward_cost``).

* ``online``: every point trains with the teacher run on its views, as a
  grid of independent runs does (``FunMatchDistiller.fit`` per point).
* ``shared``: :func:`kdzoo.train.grid.fit_grid_from_one_cache`: the teacher's
  logits on the views of the longest point are cached once (float16, all
  classes), every point trains from that cache with its own temperature
  applied at read time. The cache build is part of the shared time.
* ``lockstep``: :func:`kdzoo.train.grid.fit_grid_lockstep`: the points of equal
  length train together (:class:`kdzoo.distill.LockstepGrid`): per step one
  batch of views is rendered and the teacher runs once for the whole group.

A window is the whole grid in one mode. Each mode builds its distillers once
and the first (warm-up, discarded) window traces them, so the timed windows
measure what a real grid spends per epoch, not Keras/tf.data start-up that a
10,000-epoch run pays once; the modes alternate window by window and the
figures are medians (``--quick`` skips the warm-up and runs a 2-point grid: a smoke
run for CI).

Prints ONE JSON line: ``ratio`` = online grid wall time / the faster of the
shared and lockstep grids' wall times (goal 3); ``shared_ratio`` and
``lockstep_ratio`` give each. ``bound`` is what the step costs allow: with teacher forward
``t``, student train step ``s`` (both measured on one batch, in units of the
student's forward) and ``P`` points of ``E_p`` epochs, online costs
``sum_p E_p (t + s)`` and shared ``max_p E_p t + sum_p E_p s`` (input
pipeline not counted). It stays below ``(t + s) / s`` however many points
share the cache: the student's own training is not shared.
On 2 shared CPU cores the input pipeline (inception crop, flip, mixup),
which every point runs in both modes, takes much of each step; so the JSON
also gives ``views_in_memory_ratio``: the same two grids on the views of
every epoch rendered once beforehand and held in memory (teacher logits
kept in memory too), which is what the cache saves where the pipeline runs
beside the accelerator, as at the paper's scale.
``--teacher_width`` picks another teacher (76: about 10x the student's
forward, near R152x2 / R50x1's 11x in FLOPs).

    python benchmarks/grid_cache.py [--quick] [--teacher_width 52]
"""

import _bench  # noqa: F401  (sys.path, TF log level)

import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kdzoo  # noqa: E402
import kdzoo.distill as kd  # noqa: E402
from kdzoo.train import grid  # noqa: E402
from kdzoo.data import fashion_mnist  # noqa: E402
from kdzoo.distill.funmatch.teacher_cache import targets_from_cache  # noqa: E402
from kdzoo.models.fmnist import build_fmnist_cnn  # noqa: E402

TEACHER_WIDTH = 52  # forward ~5x fmnist_cnn_w16's on CPU (reported as measured)


def forward_seconds(model, x, repeats=3):
    fn = tf.function(lambda t: model(t, training=False))
    fn(x).numpy()
    return _bench.median([1.0 / _bench.timed(lambda: fn(x).numpy(), 1)
                          for _ in range(repeats)])


def train_step_seconds(d, views, repeats=3):
    """Seconds of one cached-target train step (student forward + backward + update)."""
    ds = tf.data.Dataset.from_tensors(views).repeat()
    d.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    return _bench.median([1.0 / _bench.timed(
        lambda: d.fit(ds, steps_per_epoch=10, epochs=1, verbose=0), 1) / 10
        for _ in range(repeats)])


def main():
    args = _bench.parse_args(__doc__, teacher_width=dict(
        type=int, default=TEACHER_WIDTH, help="teacher width (52: ~5x the student's forward)"))
    if args.quick:  # CI checks the JSON line, not the figures: 2 points, as each mode
        # traces one distiller per point (tracing is most of a quick run), 1 repeat
        n, batch, windows, repeats = 128, 32, 1, 1
        axes = {"lr": (1e-3,), "temperature": (1.0, 4.0)}
        epochs = 1
    else:
        n, batch, windows, repeats = 1024, 64, 2, 3
        axes = {"epochs": (1, 2), "lr": (1e-3, 3e-3), "temperature": (1.0, 4.0)}
        epochs = None
    points = grid.expand_grid(axes)
    lengths = [p.get("epochs", epochs) for p in points]
    keras.utils.set_random_seed(0)
    x, _ = fashion_mnist.load("train")
    images = np.ascontiguousarray(x[:n])
    teacher = build_fmnist_cnn(width=args.teacher_width, name="teacher")
    init = kdzoo.load("fmnist_cnn_w16", weights=None).get_weights()

    def make(point):
        s = kdzoo.load("fmnist_cnn_w16", weights=None)
        s.set_weights(init)
        d = kd.FunMatchDistiller(teacher, s, image_size=28, temperature=point["temperature"],
                                 seed=0)
        d.compile(optimizer=keras.optimizers.Adam(point["lr"], global_clipnorm=1.0),
                  jit_compile=False)
        return d

    def fit(d, point, e):
        return d.fit(images, batch_size=batch, epochs=e, verbose=0)

    probe = tf.constant(images[:batch], tf.float32)
    student_fwd = forward_seconds(make(points[0]).student, probe, repeats)
    teacher_fwd = forward_seconds(teacher, probe, repeats)
    cost = teacher_fwd / student_fwd
    d = make(points[0])
    views = next(iter(d.make_train_dataset(images, batch)))
    views = {"student": views["student"], "targets": d.teacher_probs(views["student"])}
    step = train_step_seconds(d, views, repeats) / student_fwd
    total, longest = sum(lengths), max(lengths)
    bound = total * (cost + step) / (longest * cost + total * step)

    online_d = [make(p) for p in points]
    shared_d = {id(p): make(p) for p in points}  # make_distiller hands these out
    with tempfile.TemporaryDirectory() as tmp:
        counter = {"shared": 0}

        def online():
            start = time.perf_counter()
            for d, point, e in zip(online_d, points, lengths):
                fit(d, point, e)
            return 1.0 / (time.perf_counter() - start)  # grids per second

        def shared():
            counter["shared"] += 1
            path = os.path.join(tmp, f"grid{counter['shared']}.tcache")
            start = time.perf_counter()
            grid.fit_grid_from_one_cache(lambda p: shared_d[id(p)], images, points, path,
                                         batch_size=batch, epochs=epochs, fit_point=fit)
            seconds = time.perf_counter() - start
            size = os.path.getsize(path)
            os.remove(path)
            counter["cache_mb"] = size / 2 ** 20
            return 1.0 / seconds

        lock_d = [make(p) for p in points]
        groups = []
        for e in sorted(set(lengths)):
            group = kd.LockstepGrid([d for d, n in zip(lock_d, lengths) if n == e])
            group.compile(jit_compile=False)
            groups.append((group, e))

        def lockstep():
            start = time.perf_counter()
            for group, e in groups:
                group.fit(images, batch_size=batch, epochs=e, verbose=0)
            return 1.0 / (time.perf_counter() - start)

        warmup = 0 if args.quick else 1  # --quick: a smoke run, tracing included in the figures
        rates = _bench.interleaved({"online": online, "shared": shared, "lockstep": lockstep},
                                   windows, warmup=warmup)
        # The same grids on views rendered once and held in memory (no input pipeline;
        # skipped by --quick, which only smoke-tests the script).
        d0 = online_d[0]
        d0.use_teacher_cache(None)
        steps = n // batch
        held = [] if args.quick else [b["student"].numpy() for b in d0.make_train_dataset(
            images, batch).take(max(lengths) * steps)]
        mem_on = online_d  # already traced for {"student"} batches
        mem_sh = [shared_d[id(p)] for p in points]  # ... and for {"student", "targets"}
        for d in mem_sh:
            d.use_teacher_cache(None)

        def views_of(e, targets=None):
            data = {"student": np.stack(held[:e * steps])}
            if targets is not None:
                data["targets"] = targets[:e * steps]
            return tf.data.Dataset.from_tensor_slices(data)

        def mem_online():
            start = time.perf_counter()
            for d, e in zip(mem_on, lengths):
                d.fit(views_of(e), epochs=1, steps_per_epoch=e * steps, verbose=0)
            return 1.0 / (time.perf_counter() - start)

        teacher_fn = tf.function(lambda v: teacher(v, training=False))

        def mem_shared():
            start = time.perf_counter()
            logits = np.stack([teacher_fn(v).numpy().astype(np.float16) for v in held])
            for d, point, e in zip(mem_sh, points, lengths):
                targets = targets_from_cache(logits[:, :, None], None, None, 10,
                                             point["temperature"])
                d.fit(views_of(e, targets), epochs=1, steps_per_epoch=e * steps, verbose=0)
            return 1.0 / (time.perf_counter() - start)

        mem = None if args.quick else _bench.interleaved(
            {"online": mem_online, "shared": mem_shared}, windows, warmup=warmup)
    mem_s = {k: 1.0 / _bench.median(v) for k, v in mem.items()} if mem else None
    seconds = {k: 1.0 / _bench.median(v) for k, v in rates.items()}
    ratio = seconds["online"] / min(seconds["shared"], seconds["lockstep"])
    for k, v in seconds.items():
        print(f"{k:7s} {v:7.2f} s for the {len(points)}-point grid "
              f"(windows: {[round(1 / r, 2) for r in rates[k]]})")
    _bench.emit({
        "benchmark": "grid_cache",
        "ratio": round(ratio, 3),
        "goal": 3.0,
        "shared_ratio": round(seconds["online"] / seconds["shared"], 3),
        "lockstep_ratio": round(seconds["online"] / seconds["lockstep"], 3),
        "bound": round(bound, 3),
        "views_in_memory_ratio": mem_s and round(mem_s["online"] / mem_s["shared"], 3),
        "views_in_memory_grid_s": mem_s and {k: round(v, 2) for k, v in mem_s.items()},
        "grid_s": {k: round(v, 2) for k, v in seconds.items()},
        "points": len(points), "axes": {k: list(v) for k, v in axes.items()},
        "point_epochs": lengths, "images": n, "batch": batch, "windows": windows,
        "teacher_forward_cost": round(cost, 2),
        "student_train_step_cost": round(step, 2),
        "cache_mb": round(counter["cache_mb"], 3),
        "what": "wall time of a FunMatch grid, every point with its online teacher / "
                "the faster of: one teacher-output cache built once (included) and read "
                "by every point with its own T; the points of equal length in lockstep "
                f"(one view batch and one teacher pass per step); teacher fmnist_cnn width {args.teacher_width}, student "
                "fmnist_cnn_w16; costs in units of the student's forward on one batch",
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
