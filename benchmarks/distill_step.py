"""Distillation train step: FunMatchDistiller vs keras.distillation.Distiller vs hand-written.

The same frozen teacher (``fmnist_cnn_w32``), the same student initial weights
(``fmnist_cnn_w16``), the same batches of views and the same math on all
three: KL(teacher_T || student_T) * T**2, Adam, global-norm clip 1.0, no
labels, float32, no XLA (``precision.py`` measures those):

* ``funmatch``: ``FunMatchDistiller.fit`` (its own train step).
* ``keras``: ``keras.distillation.Distiller`` with ``LogitsDistillation``
  (``student_loss_weight=0``, Adam with ``global_clipnorm=1.0``), ``fit``.
* ``handwritten``: a minimal ``tf.function`` step (teacher, tape, KL, clip,
  ``optimizer.apply``) in a Python loop.

Inputs are precomputed FunMatch views (inception crop + flip + mixup) held in
memory, fed through the same in-memory ``tf.data`` stream to all three, so the
input pipeline's cost is excluded. A window is one ``fit`` call (or loop) of
``steps`` steps, fit overhead included; the three methods alternate window by
window; figures are medians after one warm-up round.

Prints ONE JSON line: ``ratio`` = funmatch / keras images/s (goal 1.0);
``vs_handwritten`` = funmatch / handwritten (goal 0.95); ``goal_met`` needs both.

    python benchmarks/distill_step.py [--quick]
"""

import _bench  # noqa: F401  (sys.path, TF log level)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kdzoo  # noqa: E402
from kdzoo.data import fashion_mnist  # noqa: E402
from kdzoo.distill.funmatch import FunMatchDistiller  # noqa: E402

T = 2.0


def views(teacher, student, n_batches, batch):
    x, _ = fashion_mnist.load("train")
    d = FunMatchDistiller(teacher, student, image_size=28, temperature=T, seed=0)
    stream = d.make_train_dataset(x[:n_batches * batch], batch)
    return np.stack([b["student"].numpy() for b in stream.take(n_batches)])


def adam():
    return keras.optimizers.Adam(1e-3, global_clipnorm=1.0)


def main():
    args = _bench.parse_args(__doc__)
    batch, steps, windows, n_batches = (64, 6, 3, 6) if args.quick else (128, 25, 7, 25)
    keras.utils.set_random_seed(0)
    teacher = kdzoo.load("fmnist_cnn_w32", weights=None)
    teacher.trainable = False
    base = kdzoo.load("fmnist_cnn_w16", weights=None)
    init = base.get_weights()

    def student():
        s = kdzoo.load("fmnist_cnn_w16", weights=None)
        s.set_weights(init)
        return s

    xb = views(teacher, student(), n_batches, batch)  # [n_batches, B, 28, 28, 1]

    # FunMatch: dict batches {"student": views}.
    fm = FunMatchDistiller(teacher, student(), image_size=28, temperature=T, seed=0)
    fm.compile(optimizer=adam(), jit_compile=False)
    fm_ds = tf.data.Dataset.from_tensor_slices({"student": xb}).repeat()

    # Keras' Distiller: plain image batches, no labels.
    kd = keras.distillation.Distiller(
        teacher=teacher, student=student(),
        distillation_losses=keras.distillation.LogitsDistillation(temperature=T),
        student_loss_weight=0.0)
    kd.compile(optimizer=adam(), loss="sparse_categorical_crossentropy", jit_compile=False)
    kd_ds = tf.data.Dataset.from_tensor_slices(xb).repeat()

    # Hand-written: the same math in one tf.function.
    hw_student = student()
    hw_opt = keras.optimizers.Adam(1e-3)
    hw_opt.build(hw_student.trainable_variables)

    @tf.function
    def hw_step(x):
        t = tf.nn.softmax(teacher(x, training=False) / T)
        with tf.GradientTape() as tape:
            s = hw_student(x, training=True)
            kl = tf.reduce_sum(t * (tf.math.log(tf.maximum(t, 1e-30))
                                    - tf.nn.log_softmax(s / T)), axis=-1)
            loss = tf.reduce_mean(kl) * T * T
        variables = hw_student.trainable_variables
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), 1.0)
        hw_opt.apply(grads, variables)
        return loss

    hw_it = iter(kd_ds)

    def run_hw():
        for _ in range(steps):
            loss = hw_step(next(hw_it))
        loss.numpy()  # wait for the last step

    images = steps * batch
    runners = {
        "funmatch": lambda: _bench.timed(
            lambda: fm.fit(fm_ds, steps_per_epoch=steps, epochs=1, verbose=0), images),
        "keras": lambda: _bench.timed(
            lambda: kd.fit(kd_ds, steps_per_epoch=steps, epochs=1, verbose=0), images),
        "handwritten": lambda: _bench.timed(run_hw, images),
    }
    rates = _bench.interleaved(runners, windows, warmup=1)
    med = {k: _bench.median(v) for k, v in rates.items()}
    ratio = med["funmatch"] / med["keras"]
    vs_hw = med["funmatch"] / med["handwritten"]
    for k, v in med.items():
        print(f"{k:12s} {v:9.1f} images/s  (windows: {[round(r) for r in rates[k]]})")
    _bench.emit({
        "benchmark": "distill_step",
        "ratio": round(ratio, 3),
        "goal": 1.0,
        "vs_handwritten": round(vs_hw, 3),
        "goal_vs_handwritten": 0.95,
        "goal_met": bool(ratio >= 1.0 and vs_hw >= 0.95),
        "images_per_s": {k: round(v, 1) for k, v in med.items()},
        "images_per_s_best": {k: round(max(v), 1) for k, v in rates.items()},
        "batch": batch, "steps_per_window": steps, "windows": windows,
        "teacher": "fmnist_cnn_w32", "student": "fmnist_cnn_w16", "image_size": 28,
        "what": "median images/s of FunMatchDistiller.fit / keras Distiller.fit on the same "
                "precomputed views; vs_handwritten: / a minimal tf.function step",
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
