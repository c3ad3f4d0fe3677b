"""Teacher-output cache: epoch time training from the cache vs running the teacher online.

FunMatch (inception crop + flip + mixup) on real Fashion-MNIST at 28 px, student
``fmnist_cnn_w16``, teacher the same family at width 76 (its forward pass costs
about 10x the student's: the measured ratio is reported as
``teacher_forward_cost``). The cache holds all 10 logits in float16 and is
built first with ``kdzoo.distill.cache_teacher`` (its time and size are
reported, not part of the ratio: it is meant to run elsewhere, once).

A window is one full epoch through ``FunMatchDistiller.fit`` (input pipeline,
steps, everything); online and cached epochs alternate (epoch e of both runs
the same views); figures are medians after one warm-up epoch.

Prints ONE JSON line: ``ratio`` = online epoch time / cached epoch time (goal 2.5);
``step_ratio``: the same for the train step alone, on views held in memory
(what the cache saves where the input pipeline is not competing for the cores).

    python benchmarks/teacher_cache.py [--quick]
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
from kdzoo.data import fashion_mnist  # noqa: E402
from kdzoo.models.fmnist import build_fmnist_cnn  # noqa: E402

T = 2.0
TEACHER_WIDTH = 76


def forward_rate(model, x, repeats=5):
    fn = tf.function(lambda t: model(t, training=False))
    fn(x).numpy()
    rates = [_bench.timed(lambda: fn(x).numpy(), int(x.shape[0])) for _ in range(repeats)]
    return _bench.median(rates)


def main():
    args = _bench.parse_args(__doc__)
    # --quick (CI) checks the JSON line, not the figures: half the images, one timed window.
    n, batch, windows = (512, 64, 1) if args.quick else (4096, 128, 4)
    epochs = 1 + windows  # one warm-up epoch
    keras.utils.set_random_seed(0)
    x, _ = fashion_mnist.load("train")
    images = np.ascontiguousarray(x[:n])
    teacher = build_fmnist_cnn(width=TEACHER_WIDTH, name="teacher")
    init = kdzoo.load("fmnist_cnn_w16", weights=None).get_weights()

    def distiller():
        s = kdzoo.load("fmnist_cnn_w16", weights=None)
        s.set_weights(init)
        d = kd.FunMatchDistiller(teacher, s, image_size=28, temperature=T, seed=0)
        d.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
                  jit_compile=False)
        return d

    probe = tf.constant(images[:batch], tf.float32)
    cost = forward_rate(distiller().student, probe) / forward_rate(teacher, probe)

    online, cached = distiller(), distiller()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fmnist.tcache")
        start = time.perf_counter()
        kd.cache_teacher(cached, images, path, epochs=epochs, batch_size=batch)
        build_s = time.perf_counter() - start
        cache_mb = os.path.getsize(path) / 2 ** 20
        cached.use_teacher_cache(path)

        def epoch_runner(d):
            state = {"epoch": 0}

            def run():
                e = state["epoch"]
                state["epoch"] += 1
                return _bench.timed(lambda: d.fit(images, batch_size=batch, initial_epoch=e,
                                                  epochs=e + 1, verbose=0), n)
            return run

        rates = _bench.interleaved({"online": epoch_runner(online),
                                    "cached": epoch_runner(cached)}, windows, warmup=1)

        # Secondary: the train step alone on views held in memory (no input pipeline).
        steps = n // batch
        held = list(cached.make_train_dataset(images, batch).take(steps))
        with_targets = tf.data.Dataset.from_tensor_slices(
            {k: np.stack([b[k].numpy() for b in held]) for k in ("student", "targets")})
        views_only = with_targets.map(lambda b: {"student": b["student"]})

        def step_runner(d, ds):
            ds = ds.repeat()
            d.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
            return lambda: _bench.timed(
                lambda: d.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0), n)

        cached.use_teacher_cache(None)  # views carry their targets already
        step_rates = _bench.interleaved({"online": step_runner(online, views_only),
                                         "cached": step_runner(cached, with_targets)},
                                        windows, warmup=0)
    med = {k: _bench.median(v) for k, v in rates.items()}
    ratio = med["cached"] / med["online"]  # = online epoch time / cached epoch time
    for k, v in med.items():
        print(f"{k:8s} {n / v:7.2f} s/epoch  {v:8.1f} images/s  "
              f"(windows: {[round(r) for r in rates[k]]})")
    _bench.emit({
        "benchmark": "teacher_cache",
        "ratio": round(ratio, 3),
        "goal": 2.5,
        "epoch_s": {k: round(n / v, 3) for k, v in med.items()},
        "images_per_s": {k: round(v, 1) for k, v in med.items()},
        "images_per_s_best": {k: round(max(v), 1) for k, v in rates.items()},
        "step_ratio": round(_bench.median(step_rates["cached"])
                            / _bench.median(step_rates["online"]), 3),
        "step_images_per_s": {k: round(_bench.median(v), 1) for k, v in step_rates.items()},
        "teacher_forward_cost": round(cost, 2),
        "cache_build_s": round(build_s, 2),
        "cache_build_images_per_s": round(epochs * (n // batch) * batch / build_s, 1),
        "cache_mb": round(cache_mb, 3),
        "cache_epochs": epochs, "images": n, "batch": batch, "windows": windows,
        "what": "median epoch time online teacher / cached teacher (FunMatchDistiller.fit, "
                "full epochs incl. input pipeline); teacher fmnist_cnn width "
                f"{TEACHER_WIDTH}, student fmnist_cnn_w16, top_k=all, float16",
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
