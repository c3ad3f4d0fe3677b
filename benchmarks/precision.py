"""Mixed precision and XLA on/off for the FunMatch distillation step, each measured.

Six configurations (``--quick``: four, XLA only with float32): policy
``float32`` / ``mixed_bfloat16`` / ``mixed_float16`` x ``jit_compile`` False /
True, for ``FunMatchDistiller.fit`` (teacher
``fmnist_cnn_w32`` run online, student ``fmnist_cnn_w16``, 28 px) on the same
precomputed views held in memory. Models are built under each policy; the
configurations alternate window by window; figures are medians after a
warm-up round.

kdzoo's default on a CPU-only machine is float32 without XLA
(``mixed_precision=None``; Keras resolves ``jit_compile="auto"`` to False
without an accelerator). Prints ONE JSON line: ``fastest`` (the fastest
configuration here) and ``ratio`` = default images/s / fastest images/s
(goal 0.95: the default is within 5% of the fastest on this device kind).

    python benchmarks/precision.py [--quick]
"""

import _bench  # noqa: F401  (sys.path, TF log level)

import platform  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kdzoo  # noqa: E402
from kdzoo.data import fashion_mnist  # noqa: E402
from kdzoo.distill.funmatch import FunMatchDistiller  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
DEFAULT = "float32/xla_off"


def main():
    args = _bench.parse_args(__doc__)
    batch, steps, windows = (32, 3, 1) if args.quick else (128, 16, 5)
    keras.utils.set_random_seed(0)
    x, _ = fashion_mnist.load("train")
    keras.mixed_precision.set_global_policy("float32")
    teacher_w = kdzoo.load("fmnist_cnn_w32", weights=None).get_weights()
    student_w = kdzoo.load("fmnist_cnn_w16", weights=None).get_weights()
    probe = FunMatchDistiller(kdzoo.load("fmnist_cnn_w32", weights=None),
                              kdzoo.load("fmnist_cnn_w16", weights=None), image_size=28,
                              temperature=2.0, seed=0)
    stream = probe.make_train_dataset(np.ascontiguousarray(x[:steps * batch]), batch)
    held = np.stack([b["student"].numpy() for b in stream.take(steps)])
    views = tf.data.Dataset.from_tensor_slices({"student": held}).repeat()

    runners, errors = {}, {}
    # --quick (CI) compiles XLA for float32 only: each XLA compile costs ~10 s here.
    configs = [(p, xla) for p in POLICIES for xla in (False, True)
               if not (args.quick and xla and p != "float32")]
    for policy, xla in configs:
        name = f"{policy}/xla_{'on' if xla else 'off'}"
        keras.mixed_precision.set_global_policy(policy)
        try:
            teacher = kdzoo.load("fmnist_cnn_w32", weights=None)
            teacher.set_weights(teacher_w)
            student = kdzoo.load("fmnist_cnn_w16", weights=None)
            student.set_weights(student_w)
            d = FunMatchDistiller(teacher, student, image_size=28, temperature=2.0,
                                  seed=0)
            d.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
                      jit_compile=xla)
            d.fit(views, steps_per_epoch=1, epochs=1, verbose=0)  # trace, compile
        except Exception as e:  # a configuration this build cannot run: report it
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            continue
        finally:
            keras.mixed_precision.set_global_policy("float32")
        runners[name] = (lambda d=d: _bench.timed(
            lambda: d.fit(views, steps_per_epoch=steps, epochs=1, verbose=0),
            steps * batch))
    if DEFAULT not in runners:
        raise RuntimeError(f"The default configuration failed: {errors.get(DEFAULT)}")
    rates = _bench.interleaved(runners, windows, warmup=1)
    med = {k: _bench.median(v) for k, v in rates.items()}
    fastest = max(med, key=med.get)
    ratio = med[DEFAULT] / med[fastest]
    for k, v in sorted(med.items(), key=lambda kv: -kv[1]):
        print(f"{k:24s} {v:9.1f} images/s  {v / med[DEFAULT]:5.2f}x default  "
              f"(windows: {[round(r) for r in rates[k]]})")
    for k, e in errors.items():
        print(f"{k:24s} failed: {e}")
    _bench.emit({
        "benchmark": "precision",
        "ratio": round(ratio, 3),
        "goal": 0.95,
        "fastest": fastest,
        "default": DEFAULT,
        "images_per_s": {k: round(v, 1) for k, v in med.items()},
        "images_per_s_best": {k: round(max(v), 1) for k, v in rates.items()},
        "fastest_by_best_window": max(rates, key=lambda k: max(rates[k])),
        "speedup_vs_default": {k: round(v / med[DEFAULT], 3) for k, v in med.items()},
        "failed": errors,
        "device": f"CPU ({platform.processor() or platform.machine()}), "
                  f"{len(tf.config.list_physical_devices('GPU'))} GPU",
        "batch": batch, "steps_per_window": steps, "windows": windows,
        "what": "median images/s of FunMatchDistiller.fit per (policy, jit_compile); "
                "ratio: default config / fastest config",
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
