"""Input pipeline headroom: images/s the FunMatch view pipeline delivers vs what the step eats.

Two scales:

* ``demo``: real Fashion-MNIST, raw uint8 28x28x1 arrays (no decode), views at
  28 px; step: teacher ``fmnist_cnn_w32``, student ``fmnist_cnn_w16``.
* ``128px``: Fashion-MNIST upscaled to 160x160 RGB and JPEG-encoded (like a
  TFDS image dataset), decoded in ``tf.data``, views at 128 px; step: the same
  CNN family built for 128x128x3 (widths 32 / 16).

Pipeline: ``FunMatchDistiller.make_train_dataset`` (shuffle, decode where there
is one, inception crop, flip, antialiased resize, batch, mixup), iterated on
its own. Step: ``FunMatchDistiller.fit`` on precomputed views held in memory
(teacher run online, float32, no XLA). The small CNNs are the hard case: a
bigger student eats fewer images/s and leaves more headroom. Figures are
medians of timed windows after a warm-up window; a window is one whole epoch
(pipeline windows are drawn from one running iterator, so each includes its
epoch's shuffle-buffer fill and the prefetch buffer helps once at most).

Prints ONE JSON line: ``ratio`` = the smaller headroom (pipeline / step
images/s) of the two scales (goal 3.0), and each scale's figures.

    python benchmarks/input_pipeline.py [--quick]
"""

import _bench  # noqa: F401  (sys.path, TF log level)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kdzoo.distill as kd  # noqa: E402
from kdzoo.data import fashion_mnist  # noqa: E402
from kdzoo.models.fmnist import build_fmnist_cnn  # noqa: E402


def jpegs(images, size):
    """Upscale to ``size`` px RGB and JPEG-encode (outside the timing)."""
    out = []
    for i in range(0, len(images), 256):
        big = tf.image.resize(tf.cast(images[i:i + 256], tf.float32), [size, size])
        rgb = tf.cast(tf.clip_by_value(tf.tile(big, [1, 1, 1, 3]), 0, 255), tf.uint8)
        out.extend(tf.io.encode_jpeg(im, quality=90).numpy() for im in rgb)
    return out


def measure(name, source, num_images, image_size, channels, batch, steps, windows):
    teacher = build_fmnist_cnn(width=32, input_shape=(image_size, image_size, channels))
    student = build_fmnist_cnn(width=16, input_shape=(image_size, image_size, channels))
    d = kd.FunMatchDistiller(teacher, student, image_size=image_size, temperature=2.0, seed=0)
    d.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0), jit_compile=False)

    stream = iter(d.make_train_dataset(source, batch, num_images=num_images))

    def pipeline():
        for _ in range(steps):
            b = next(stream)
        b["student"].numpy()

    pipe = [_bench.timed(pipeline, steps * batch) for _ in range(1 + windows)][1:]

    held = np.stack([next(stream)["student"].numpy() for _ in range(steps)])
    views = tf.data.Dataset.from_tensor_slices({"student": held}).repeat()
    step = [_bench.timed(lambda: d.fit(views, steps_per_epoch=steps, epochs=1, verbose=0),
                         steps * batch) for _ in range(1 + windows)][1:]
    p, s = _bench.median(pipe), _bench.median(step)
    print(f"{name:6s} pipeline {p:8.1f} images/s  step {s:8.1f} images/s  "
          f"headroom {p / s:5.2f}x  (pipeline {[round(r) for r in pipe]}, "
          f"step {[round(r) for r in step]})")
    return {"pipeline_images_per_s": round(p, 1), "step_images_per_s": round(s, 1),
            "headroom": round(p / s, 3), "image_size": image_size, "batch": batch,
            "pipeline_best": round(max(pipe), 1), "step_best": round(max(step), 1)}


def main():
    args = _bench.parse_args(__doc__)
    keras.utils.set_random_seed(0)
    x, _ = fashion_mnist.load("train")
    if args.quick:
        n_demo, n_big, windows, demo_batch, big_batch = 1024, 128, 2, 64, 16
    else:
        n_demo, n_big, windows, demo_batch, big_batch = 4096, 512, 5, 128, 32
    # A window is one whole epoch (its shuffle-buffer fill included).
    demo_cfg = dict(batch=demo_batch, steps=n_demo // demo_batch)
    big_cfg = dict(batch=big_batch, steps=n_big // big_batch)
    demo = measure("demo", np.ascontiguousarray(x[:n_demo]), n_demo, 28, 1,
                   windows=windows, **demo_cfg)
    encoded = jpegs(x[:n_big], 160)
    source = tf.data.Dataset.from_tensor_slices(encoded).map(
        lambda s: tf.io.decode_jpeg(s, channels=3), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    big = measure("128px", source, n_big, 128, 3, windows=windows, **big_cfg)
    ratio = min(demo["headroom"], big["headroom"])
    _bench.emit({
        "benchmark": "input_pipeline",
        "ratio": round(ratio, 3),
        "goal": 3.0,
        "demo": demo,
        "px128": big,
        "what": "min over scales of median pipeline images/s (make_train_dataset: decode, "
                "inception crop, flip, resize, mixup) / FunMatch train-step images/s on "
                "precomputed views",
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
