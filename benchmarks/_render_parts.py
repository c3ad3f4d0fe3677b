"""Where the funmatch stream's per-image CPU goes: keys, box + flip, and either rendering.

A diagnostic for issue 23 (``_*.py``: no goal, skipped by tests/e2e/test_benchmarks.py):
random 28 px uint8 images, batch 128, the study's inception area range (0.25, 1); CPU
ms per batch of four tf.data pipelines that add one stage at a time, two rounds. The
keys and boxes are drawn as ``ViewMaker`` draws them (``make_key`` per image, then a
salt per stream).

    PYTHONPATH=. python benchmarks/_render_parts.py
"""

import json
import time

import numpy as np
import tensorflow as tf

from kdzoo.data import augment, batched_crops

SIZE, BATCH, AREA = 28, 128, (0.25, 1.0)


def keys(i, image):
    key = augment.make_key(0, tf.constant(0, tf.int64), i)
    return (augment.make_key(key, augment.STUDENT_CROP),
            augment.make_key(key, augment.STUDENT_FLIP), image)


def box(i, image):
    crop_key, flip_key, image = keys(i, image)
    return (augment.inception_crop_box(image, crop_key, AREA),
            augment.flip_decision(flip_key), image)


def per_image(i, image):
    b, flip, image = box(i, image)
    return augment.maybe_flip(augment.crop_resize(image, b, SIZE, antialias=False), flip)


def main():
    images = np.random.default_rng(0).integers(0, 256, (1000, SIZE, SIZE, 1), np.uint8)
    base = tf.data.Dataset.from_tensor_slices(images).enumerate().repeat()
    par = dict(num_parallel_calls=tf.data.AUTOTUNE)
    pipelines = {
        "keys only": base.map(keys, **par).batch(BATCH),
        "keys+box+flip": base.map(box, **par).batch(BATCH),
        "keys+box+flip+batched render": base.map(box, **par).batch(BATCH).map(
            lambda b, flip, image: batched_crops.render_boxes(image, b, SIZE, flip)),
        "keys+box+flip+per-image render": base.map(per_image, **par).batch(BATCH),
    }
    steps = 60
    for _ in range(2):
        for what, ds in pipelines.items():
            it = iter(ds.prefetch(2))
            for _ in range(5):
                next(it)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                next(it)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            print(json.dumps({"what": what, "cpu_ms_per_batch": round(1000 * cpu / steps, 2),
                              "images_per_s": round(steps * BATCH / wall)}), flush=True)


if __name__ == "__main__":
    main()
