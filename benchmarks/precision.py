"""Dtype policy x XLA on compute-dominated BiT workloads; the "auto" choice next to the fastest.

Tiny Fashion-MNIST models measure nothing here (every configuration ran at the
same ~3,270 images/s: overhead, not arithmetic), so this benchmark uses BiT
ResNet-v2 at sizes where convolutions dominate, with a small batch as a CPU
run has:

* ``forward``: BiT-R50x1 inference at 128 px, batch 4 (the frozen teacher's
  work), one compiled ``tf.function`` per configuration. Also reports the
  top-1 agreement of each configuration's logits with float32's on the same
  images: what running the teacher alone in bf16 costs in agreement.
* ``train``: the ``FunMatchDistiller.fit`` step, R50x1 teacher and student at
  64 px, batch 4, on the same precomputed views.

Configurations: policy ``float32`` / ``mixed_bfloat16`` / ``mixed_float16`` x
``jit_compile`` False / True (``--quick``: a tiny two-block BiT at 32 px, float32
and bf16 without XLA). Models are built under each policy with the same weights;
configurations alternate window by window; figures are medians after a
warm-up window. ``auto`` is ``kdzoo.train.precision.resolve_precision("auto")``
without XLA (Keras' CPU default). Prints ONE JSON line: ``ratio`` = auto
images/s / fastest images/s on the train workload (goal 0.95), the CPU flags
that decided, and every configuration's figures.

    python benchmarks/precision.py [--quick] [--configs float32/xla_off,mixed_bfloat16/xla_off]
"""

import _bench  # noqa: F401  (sys.path, TF log level)

import platform  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kdzoo.train import precision  # noqa: E402
from kdzoo.distill.funmatch import FunMatchDistiller  # noqa: E402
from kdzoo.models.bit import build_bit  # noqa: E402

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def bit(size, quick):
    if quick:  # two blocks of one unit: tracing, most of a CI run, grows with the layers
        return build_bit(50, 0.5, num_classes=100, input_shape=(size, size, 3),
                         units=(1, 1))
    return build_bit(50, 1, num_classes=1000, input_shape=(size, size, 3))


def main():
    args = _bench.parse_args(__doc__, configs=dict(
        default=None, help="comma list of policy/xla_on|off to run, e.g. "
                           "float32/xla_off,mixed_bfloat16/xla_off (default: all)"))
    quick = args.quick
    batch = 4
    fwd_size, train_size = (32, 32) if quick else (128, 64)
    steps, windows = (2, 1) if quick else (3, 3)
    # --quick (CI) skips XLA: each XLA compile of a BiT step costs a minute on 2 cores.
    configs = ([("float32", False), ("mixed_bfloat16", False)] if quick
               else [(p, x) for p in POLICIES for x in (False, True)])
    if args.configs:
        wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
        known = {f"{p}/xla_{'on' if x else 'off'}": (p, x) for p in POLICIES
                 for x in (False, True)}
        bad = [c for c in wanted if c not in known]
        if bad:
            raise SystemExit(f"--configs: unknown {bad}; choose from {sorted(known)}")
        configs = [known[c] for c in wanted]
    auto_policy = precision.describe()
    auto = f"{auto_policy['policy']}/xla_off"
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("float32")
    fwd_w = bit(fwd_size, quick).get_weights()
    teacher_w = bit(train_size, quick).get_weights()
    student_w = bit(train_size, quick).get_weights()
    rng = np.random.default_rng(0)
    fwd_x = tf.constant(rng.uniform(0, 255, (batch, fwd_size, fwd_size, 3)), tf.float32)
    views = tf.data.Dataset.from_tensor_slices({"student": rng.uniform(
        0, 255, (steps * batch, train_size, train_size, 3)).astype("float32")}
    ).batch(batch).repeat()

    fwd_runners, train_runners, errors, logits = {}, {}, {}, {}
    for policy, xla in configs:
        name = f"{policy}/xla_{'on' if xla else 'off'}"
        keras.mixed_precision.set_global_policy(policy)
        try:
            net = bit(fwd_size, quick)
            net.set_weights(fwd_w)
            fn = tf.function(lambda x, net=net: net(x, training=False), jit_compile=xla)
            logits[name] = tf.cast(fn(fwd_x), tf.float32).numpy()  # trace, compile
            teacher, student = bit(train_size, quick), bit(train_size, quick)
            teacher.set_weights(teacher_w)
            student.set_weights(student_w)
            d = FunMatchDistiller(teacher, student, image_size=train_size, temperature=2.0)
            d.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0),
                      jit_compile=xla)
            d.fit(views, steps_per_epoch=1, epochs=1, verbose=0)  # trace, compile
        except Exception as e:  # a configuration this build cannot run: report it
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            continue
        finally:
            keras.mixed_precision.set_global_policy("float32")

        def run_fwd(fn=fn):
            for _ in range(steps):
                out = fn(fwd_x)
            out.numpy()

        fwd_runners[name] = lambda f=run_fwd: _bench.timed(f, steps * batch)
        train_runners[name] = (lambda d=d: _bench.timed(
            lambda: d.fit(views, steps_per_epoch=steps, epochs=1, verbose=0),
            steps * batch))
    if auto not in train_runners:
        raise RuntimeError(f"The auto configuration {auto} failed: {errors.get(auto)}")
    results = {}
    for workload, runners in (("forward", fwd_runners), ("train", train_runners)):
        rates = _bench.interleaved(runners, windows, warmup=1)
        med = {k: _bench.median(v) for k, v in rates.items()}
        fastest = max(med, key=med.get)
        results[workload] = {"images_per_s": {k: round(v, 2) for k, v in med.items()},
                             "fastest": fastest,
                             "auto_over_fastest": round(med[auto] / med[fastest], 3)}
        for k, v in sorted(med.items(), key=lambda kv: -kv[1]):
            mark = " <- auto" if k == auto else ""
            print(f"{workload:8s} {k:24s} {v:8.2f} images/s  {v / med[auto]:5.2f}x auto{mark}")
    ref = logits.get("float32/xla_off")
    agreement = {k: round(float((v.argmax(1) == ref.argmax(1)).mean()), 3)
                 for k, v in logits.items()} if ref is not None else {}
    for k, e in errors.items():
        print(f"{k:24s} failed: {e}")
    flags = precision.read_cpu_flags()
    _bench.emit({
        "benchmark": "precision",
        "ratio": results["train"]["auto_over_fastest"],
        "goal": 0.95,
        "auto": auto, "auto_reason": auto_policy["reason"],
        "fastest_train": results["train"]["fastest"],
        "fastest_forward": results["forward"]["fastest"],
        "forward_auto_over_fastest": results["forward"]["auto_over_fastest"],
        "train_images_per_s": results["train"]["images_per_s"],
        "forward_images_per_s": results["forward"]["images_per_s"],
        "forward_top1_agreement_with_float32": agreement,
        "failed": errors,
        "cpu_bf16_flags": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
        "cpu_has_avx512f": "avx512f" in flags, "cpu_has_avx2": "avx2" in flags,
        "device": f"CPU ({platform.processor() or platform.machine()}), "
                  f"{len(tf.config.list_physical_devices('GPU'))} GPU",
        "models": ("tiny BiT (R50 layout, width 0.5, blocks 1-2 of 1 unit)" if quick
                   else "BiT-R50x1"),
        "forward_image_size": fwd_size, "train_image_size": train_size,
        "batch": batch, "steps_per_window": steps, "windows": windows,
        "what": "median images/s per (policy, jit_compile); ratio: the auto choice "
                "(no XLA) / the fastest configuration on the FunMatch train step",
        "quick": quick,
    })


if __name__ == "__main__":
    main()
