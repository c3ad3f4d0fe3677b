"""FunMatchDistiller: the eight teaching variants, views, caching, freezing, learning.

Tiny models (a few thousand parameters), 16-32 px images, a few steps each.
Run: python -m pytest tests/distill/funmatch/test_funmatch.py -x -q
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import kdzoo.distill as kd
from kdzoo.data import augment
from kdzoo.distill import losses
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.distill.funmatch.views import ViewMaker
from helpers import smooth_images, tiny_convnet as tiny, weights_of
from reference.views import views_and_boxes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


# ---------------------------------------------------------------- helpers ---
def fmnist_cnn(width, name):
    """A small Fashion-MNIST convnet (conv-pool-conv-pool-dense), ~5-20k parameters."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(10)(x)
    return keras.Model(inputs, x, name=name)


def noise_images(n, size, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels),
                                                dtype=np.uint8)


def batches(dataset, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(n)]


# ------------------------------------------------------------- contract -----
def test_variants_and_unknown_variant_did_you_mean():
    assert kd.VARIANTS == ("fix/rs", "fix/cc", "fix/ic_ens", "ind/rc", "ind/ic", "same/rc",
                           "same/ic", "funmatch")
    with pytest.raises(ValueError, match="Did you mean 'funmatch'"):
        FunMatchDistiller(tiny(), tiny(), variant="funmatc", image_size=16)
    with pytest.raises(ValueError, match="Did you mean .*'same/ic'"):
        FunMatchDistiller(tiny(), tiny(), variant="same/ci", image_size=16)


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="5 classes but the student .* 4"):
        FunMatchDistiller(tiny(classes=5), tiny(classes=4), image_size=16)
    with pytest.raises(ValueError, match="pass image_size=16"):
        FunMatchDistiller(tiny(), tiny(), image_size=24)
    with pytest.raises(ValueError, match="pass teacher_image_size=16"):
        FunMatchDistiller(tiny(), tiny(size=32), image_size=32)
    with pytest.raises(ValueError, match="temperature"):
        FunMatchDistiller(tiny(), tiny(), image_size=16, temperature=0)
    d = FunMatchDistiller(tiny(), tiny(), image_size=16)
    d.compile(optimizer="adam")
    imgs = noise_images(16, 20)
    with pytest.raises(ValueError, match="uint8"):
        d.fit(imgs.astype("float32"), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="rank 3"):
        d.fit(imgs[..., 0], batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="smaller than the crop size"):
        d.fit(noise_images(16, 12), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="channels"):
        d.fit(noise_images(16, 20, channels=1), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        d.fit(imgs, batch_size=32, verbose=0)
    # Variable-size stream with one image too small: fails when that image is reached.
    sizes = [(20, 24), (18, 30), (10, 40), (22, 22)] * 2
    ds = tf.data.Dataset.from_generator(
        lambda: (np.zeros(s + (3,), np.uint8) for s in sizes),
        output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than the crop size"):
        d.fit(ds, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="batched"):
        d.evaluate(imgs[0], np.zeros(20), verbose=0)
    with pytest.raises(ValueError, match="do not pass loss"):
        d.compile(optimizer="adam", loss="mse")


# ------------------------------------------------------------- augment ------
def test_augmentation_is_deterministic_and_keyed_by_seed_epoch_index():
    image = tf.constant(smooth_images(1, 40)[0])
    box = lambda *key: augment.inception_crop_box(image, augment.make_key(*key)).numpy()
    np.testing.assert_array_equal(box(1, 0, 5), box(1, 0, 5))
    assert not np.array_equal(box(1, 0, 5), box(1, 1, 5))  # epoch
    assert not np.array_equal(box(1, 0, 5), box(1, 0, 6))  # index
    assert not np.array_equal(box(1, 0, 5), box(2, 0, 5))  # seed
    y, x, h, w = box(1, 0, 5)
    assert 0 <= y and 0 <= x and y + h <= 40 and x + w <= 40 and h * w >= 0.05 * 40 * 40 - 1

    imgs = smooth_images(40, 24)

    def stream(seed, **kw):
        d = FunMatchDistiller(tiny(), tiny(), variant="funmatch", image_size=16, seed=seed)
        return batches(d.make_train_dataset(imgs, batch_size=8, **kw), 6)

    a, b, c = stream(3), stream(3), stream(4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["student"], y["student"])
    assert not np.allclose(a[0]["student"], c[0]["student"])
    assert not np.allclose(a[0]["student"], a[5]["student"])  # epoch 1 differs from 0
    # 40 images / 8 = 5 steps per epoch: resuming at epoch 1 replays batch 5 exactly.
    resumed = stream(3, initial_epoch=1)
    np.testing.assert_array_equal(resumed[0]["student"], a[5]["student"])


@pytest.mark.slow
def test_training_repeats_exactly_given_a_seed():
    imgs = smooth_images(16, 20)
    teacher = tiny(name="t", seed=1)
    results = []
    for _ in range(2):
        student = tiny(name="s", seed=2)
        d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=16, seed=5)
        d.compile(optimizer=keras.optimizers.Adam(1e-2))
        d.fit(imgs, batch_size=8, epochs=2, verbose=0)
        results.append(weights_of(student))
    for w1, w2 in zip(*results):
        np.testing.assert_array_equal(w1, w2)


# ------------------------------------------------------------- variants -----
def _probe_step(variant, teacher_size=16, batch=8, seed=0):
    imgs = smooth_images(batch, 48, seed=seed)
    teacher = tiny(size=teacher_size, probe_batch=batch, name="t")
    student = tiny(size=16, probe_batch=batch, name="s")
    d = FunMatchDistiller(teacher, student, variant=variant, image_size=16,
                          teacher_image_size=teacher_size, seed=seed)
    d.compile(optimizer="adam")
    d.fit(imgs, batch_size=batch, epochs=1, verbose=0)  # exactly one step
    return (teacher.extra["probe"].seen.numpy(), student.extra["probe"].seen.numpy())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["same/rc", "same/ic", "funmatch"])
def test_same_variants_feed_identical_views(variant):
    t_seen, s_seen = _probe_step(variant)
    assert s_seen.std() > 1.0  # the probes really recorded images
    np.testing.assert_array_equal(t_seen, s_seen)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["ind/rc", "ind/ic"])
def test_ind_variants_feed_independent_crops(variant):
    t_seen, s_seen = _probe_step(variant)
    per_image = np.abs(t_seen - s_seen).mean(axis=(1, 2, 3))
    assert (per_image > 1.0).sum() >= 7, per_image
    vm = ViewMaker(variant, 16, seed=0)
    image = tf.constant(smooth_images(1, 48)[0])
    v = views_and_boxes(vm, image, 3, 0)
    assert not np.array_equal(v["student_box"].numpy(), v["teacher_box"].numpy())


def test_funmatch_mixup_is_shared_batch_mixup_of_same_ic_views():
    imgs = smooth_images(16, 32)
    make = lambda v: FunMatchDistiller(tiny(), tiny(), variant=v, image_size=16, seed=7)
    plain = batches(make("same/ic").make_train_dataset(imgs, 8, shuffle=False), 1)[0]
    mixed = batches(make("funmatch").make_train_dataset(imgs, 8, shuffle=False), 1)[0]
    assert set(plain) == set(mixed) == {"student"}  # teacher reads the same tensor
    x = plain["student"]
    partner = np.roll(x, 1, axis=0)
    diff = (x - partner).ravel()
    ratio = float(np.dot(mixed["student"].ravel() - partner.ravel(), diff) / np.dot(diff, diff))
    assert 0.5 <= ratio < 1.0  # big_vision utils.get_mixup: max(r, 1 - r)
    np.testing.assert_allclose(mixed["student"], ratio * x + (1 - ratio) * partner, atol=1e-3)
    assert np.abs(mixed["student"] - x).mean() > 0.5


def test_cross_resolution_teacher_sees_the_same_box():
    vm = ViewMaker("same/ic", 16, teacher_image_size=32, seed=1)
    ind = ViewMaker("ind/ic", 16, teacher_image_size=32, seed=1)
    images = smooth_images(8, 64, seed=3)
    same_err, ind_err = [], []
    # Train views are plain bilinear (big_vision inception_crop): compare like with like.
    for i, img in enumerate(images):
        v = views_and_boxes(vm, tf.constant(img), i, 0)
        np.testing.assert_array_equal(v["student_box"], v["teacher_box"])
        assert v["teacher"].shape == (32, 32, 3) and v["student"].shape == (16, 16, 3)
        down = tf.image.resize(v["teacher"], [16, 16], antialias=False).numpy()
        same_err.append(np.abs(down - v["student"].numpy()).mean())
        w = ind.train_views(tf.constant(img), i, 0)
        down = tf.image.resize(w["teacher"], [16, 16], antialias=False).numpy()
        ind_err.append(np.abs(down - w["student"].numpy()).mean())
    assert max(same_err) < 2.0, same_err
    assert np.mean(ind_err) > 5 * np.mean(same_err)
    # Inside training (funmatch: box, flip and mixup shared across resolutions).
    t_seen, s_seen = _probe_step("funmatch", teacher_size=32)
    down = tf.image.resize(t_seen, [16, 16], antialias=False).numpy()
    assert np.abs(down - s_seen).mean() < 2.0
    assert np.abs(down - np.roll(s_seen, 1, axis=0)).mean() > 5.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fix/rs", "fix/cc", "fix/ic_ens"])
def test_fixed_variants_never_call_the_teacher_while_training(variant):
    imgs = smooth_images(24, 20)
    crops = 4 if variant == "fix/ic_ens" else 1
    teacher = tiny(counter=True, name="t")
    count = teacher.extra["counter"].count
    d = FunMatchDistiller(teacher, tiny(name="s"), variant=variant, image_size=16,
                          temperature=2.0, ensemble_crops=crops)
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    targets = d.prepare_targets(imgs, batch_size=8)
    assert targets.shape == (24, 5) and float(count.numpy()) == 24 * crops
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
    batch = batches(d.make_train_dataset(imgs, 8), 1)[0]
    assert set(batch) == {"student", "targets"}
    hist = d.fit(imgs, batch_size=8, epochs=3, verbose=0)
    assert float(count.numpy()) == 24 * crops  # no teacher call in 3 training epochs
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    # fit prepares the targets by itself, once for all epochs.
    teacher2 = tiny(counter=True, name="t2")
    d2 = FunMatchDistiller(teacher2, tiny(name="s2"), variant=variant, image_size=16,
                           ensemble_crops=crops)
    d2.compile(optimizer="adam")
    d2.fit(imgs, batch_size=8, epochs=2, verbose=0)
    assert float(teacher2.extra["counter"].count.numpy()) == 24 * crops
    if variant == "fix/rs":  # the target is the teacher on the whole image, resized
        # plain bilinear, no antialias: big_vision pp/ops_image.py get_resize's default
        resized = tf.image.resize(tf.cast(imgs, tf.float32), [16, 16], antialias=False)
        expected = losses.tempered_probs(teacher(resized), 2.0).numpy()
        np.testing.assert_allclose(targets, expected, atol=1e-5)


@pytest.mark.slow
def test_teacher_is_frozen_bitwise():
    imgs = smooth_images(32, 20)
    teacher = tiny(batchnorm=True, name="t")
    student = tiny(name="s")
    # Give BatchNorm non-trivial statistics first so that a training-mode pass would move them.
    teacher.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    teacher.fit(imgs.astype("float32")[:, :16, :16], np.arange(32) % 5, epochs=1, verbose=0)
    t_before, s_before = weights_of(teacher), weights_of(student)
    d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=16)
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    d.fit(imgs, batch_size=8, epochs=2, verbose=0, validation_data=(imgs[:, :16, :16],
                                                                     np.zeros(32)))
    assert teacher.trainable is False
    assert len(d.trainable_variables) == len(student.trainable_variables)
    for a, b in zip(t_before, weights_of(teacher)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(s_before, weights_of(student)))


def test_ensemble_teacher_averages_tempered_probabilities():
    t1, t2, student = tiny(name="t1", seed=1), tiny(name="t2", seed=2), tiny(name="s")
    d = FunMatchDistiller([t1, t2], student, variant="same/ic", image_size=16,
                          temperature=2.0)
    assert d.teacher == [t1, t2]
    x = smooth_images(6, 16).astype("float32")
    p1 = ops.convert_to_numpy(ops.softmax(t1(x) / 2.0))
    p2 = ops.convert_to_numpy(ops.softmax(t2(x) / 2.0))
    got = ops.convert_to_numpy(d.teacher_probs(x))
    np.testing.assert_allclose(got, (p1 + p2) / 2, atol=1e-6)
    assert not np.allclose(got, p1, atol=1e-4)
    d.compile(optimizer="adam")
    hist = d.fit(smooth_images(16, 20), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


class MaxBatch(keras.layers.Layer):
    """Identity that remembers the largest batch it was run on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.largest = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                       name="largest")

    def call(self, x):
        self.largest.assign(ops.maximum(self.largest, ops.cast(ops.shape(x)[0], "float32")))
        return x


def _np_tempered(model, x, temperature):
    z = model(np.asarray(x, "float32")).numpy().astype(np.float64) / temperature
    p = np.exp(z - z.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def _np_kl(p, log_q):
    return (p * (np.log(p) - log_q)).sum(-1)


@pytest.mark.slow
def test_ensemble_sums_per_teacher_kls_by_default_or_averages_probabilities():
    # big_vision trainers/proj/distill/distill.py loss_fn: distill_loss += dist(...) per teacher.
    t1, t2, student = tiny(name="t1", seed=1), tiny(name="t2", seed=2), tiny(name="s", seed=3)
    x, y, temp = smooth_images(8, 16), np.arange(8) % 5, 2.0

    def expected(images, mode):
        p1, p2 = _np_tempered(t1, images, temp), _np_tempered(t2, images, temp)
        s = _np_tempered(student, images, temp)
        log_q = np.log(s)
        if mode == "sum":
            return temp ** 2 * (_np_kl(p1, log_q) + _np_kl(p2, log_q)).mean()
        return temp ** 2 * _np_kl((p1 + p2) / 2, log_q).mean()

    assert expected(x, "sum") > 2 * expected(x, "mean")  # sum = 2 x mean + 2 x JS > 2 x mean
    for mode in ("sum", "mean"):
        kwargs = {} if mode == "sum" else {"ensemble": "mean"}  # "sum" is the default
        d = FunMatchDistiller([t1, t2], student, variant="same/ic", image_size=16,
                              temperature=temp, **kwargs)
        assert d.get_config()["ensemble"] == mode
        d.compile(optimizer=keras.optimizers.SGD(0.0))
        res = d.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
        np.testing.assert_allclose(res["loss"], expected(x, mode), rtol=1e-4)
        views = d.make_train_dataset(x, 8, shuffle=False).take(1)
        batch = batches(views, 1)[0]
        hist = d.fit(views, steps_per_epoch=1, epochs=1, verbose=0)
        np.testing.assert_allclose(hist.history["loss"][0], expected(batch["student"], mode),
                                   rtol=1e-4)
    with pytest.raises(ValueError, match="ensemble must be 'sum'.*got 'avg'"):
        FunMatchDistiller([t1, t2], student, image_size=16, ensemble="avg")


@pytest.mark.slow
def test_ic_ens_averages_every_crop_in_bounded_teacher_batches():
    assert ViewMaker("fix/ic_ens", 16).ensemble_crops == 1000  # the paper's 1,000 crops
    assert FunMatchDistiller(tiny(), tiny(), variant="fix/ic_ens",
                             image_size=16).views.ensemble_crops == 1000
    imgs = smooth_images(3, 24, seed=2)
    inputs = keras.Input((16, 16, 3))
    watch = MaxBatch()
    base = tiny(name="t", seed=4)
    teacher = keras.Model(inputs, base(watch(inputs)), name="watched")
    d = FunMatchDistiller(teacher, tiny(name="s"), variant="fix/ic_ens", image_size=16,
                          temperature=2.0, ensemble_crops=40)
    targets = d.prepare_targets(imgs, batch_size=16)  # 120 views: batches span images
    assert targets.shape == (3, 5) and float(watch.largest.numpy()) == 16
    for i, img in enumerate(imgs):  # independent: all 40 crops at once, NumPy softmax, mean
        crops = d.views.target_views(tf.constant(img), i).numpy()
        assert crops.shape == (40, 16, 16, 3)
        np.testing.assert_allclose(targets[i], _np_tempered(base, crops, 2.0).mean(0),
                                   atol=1e-5)
    # An ensemble keeps one target per teacher (the loss sums their KLs).
    other = tiny(name="t2", seed=5)
    e = FunMatchDistiller([base, other], tiny(name="s2"), variant="fix/ic_ens",
                          image_size=16, temperature=2.0, ensemble_crops=40)
    both = e.prepare_targets(imgs, batch_size=16)
    assert both.shape == (3, 2, 5)
    np.testing.assert_allclose(both[:, 0], targets, atol=1e-6)
    crops = e.views.target_views(tf.constant(imgs[1]), 1).numpy()
    np.testing.assert_allclose(both[1, 1], _np_tempered(other, crops, 2.0).mean(0), atol=1e-5)
    e.compile(optimizer="adam")
    hist = e.fit(imgs, batch_size=3, epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()


def test_loss_is_t2_scaled_kl_and_eval_metrics():
    teacher, student = tiny(name="t", seed=1), tiny(name="s", seed=2)
    x = smooth_images(16, 16)
    y = np.arange(16) % 5
    tl = teacher(x.astype("float32")).numpy() / 3.0
    sl = student(x.astype("float32")).numpy() / 3.0
    p = np.exp(tl - tl.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    logq = sl - sl.max(1, keepdims=True)
    logq -= np.log(np.exp(logq).sum(1, keepdims=True))
    kl = (p * (np.log(p) - logq)).sum(1).mean()
    for t2, expected in ((True, 9.0 * kl), (False, kl)):
        d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=16,
                              temperature=3.0, t2_scaling=t2)
        d.compile(optimizer="adam")
        res = d.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        np.testing.assert_allclose(res["loss"], expected, rtol=1e-4)
    agree = (tl.argmax(1) == sl.argmax(1)).mean()
    np.testing.assert_allclose(res["agreement"], agree, atol=1e-6)
    np.testing.assert_allclose(res["accuracy"], (sl.argmax(1) == y).mean(), atol=1e-6)
    np.testing.assert_allclose(res["teacher_accuracy"], (tl.argmax(1) == y).mean(), atol=1e-6)


# ----------------------------------------------------- data / saving --------
def test_variable_size_images_and_eval_dataset():
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(16, 40)), int(rng.integers(16, 40))) for _ in range(20)]
    pairs = [(rng.integers(0, 256, s + (3,), dtype=np.uint8), i % 5)
             for i, s in enumerate(sizes)]
    spec = (tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([], tf.int32))
    ds = tf.data.Dataset.from_generator(lambda: iter(pairs), output_signature=spec)
    d = FunMatchDistiller(tiny(), tiny(), variant="funmatch", image_size=16,
                          teacher_image_size=16)
    d.compile(optimizer="adam")
    hist = d.fit(ds, batch_size=4, epochs=2, verbose=0,
                 validation_data=d.make_eval_dataset(ds, batch_size=4))
    assert d.train_steps_per_epoch == 5
    assert len(hist.history["loss"]) == 2 and "val_agreement" in hist.history
    assert np.isfinite(hist.history["val_loss"][-1])


def test_student_and_distiller_serialization(tmp_path):
    teacher, student = tiny(name="t"), tiny(name="s")
    d = FunMatchDistiller([teacher], student, variant="ind/ic", image_size=16,
                          temperature=4.0, seed=11)
    d.compile(optimizer="adam")
    d.fit(smooth_images(16, 20), batch_size=8, verbose=0)
    path = str(tmp_path / "student.keras")
    d.student.save(path)
    loaded = keras.saving.load_model(path)
    x = smooth_images(4, 16).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), student.predict(x, verbose=0),
                               atol=1e-6)
    config = d.get_config()
    json.dumps(config)
    clone = FunMatchDistiller.from_config(config)
    assert (clone.variant, clone.temperature, clone.seed, clone.image_size) == \
        ("ind/ic", 4.0, 11, 16)
    assert isinstance(clone.teacher, list) and clone.student.count_params() == \
        student.count_params()


def test_paper_optimizer_schedule_clip_and_kernel_only_decay():
    opt = kd.paper_optimizer(1e-2, total_steps=100, warmup_steps=10, weight_decay=1e-3)
    sched = kd.paper_schedule(1e-2, total_steps=100, warmup_steps=10)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(5)), 5e-3, rtol=1e-5)
    np.testing.assert_allclose(float(sched(10)), 1e-2, rtol=1e-5)
    np.testing.assert_allclose(float(sched(55)), 5e-3, rtol=1e-4)  # half-way down the cosine
    assert float(sched(100)) < 1e-8
    assert opt.global_clipnorm == 1.0
    assert isinstance(opt, keras.optimizers.AdamW)
    np.testing.assert_allclose(opt.weight_decay, 1e-3 / 1e-2)  # Keras convention: wd / lr
    assert isinstance(kd.paper_optimizer(1e-2, 100), keras.optimizers.Adam)
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    kernel, bias = dense.kernel, dense.bias
    bias.assign(np.ones(3, "float32"))
    k0 = kernel.numpy()
    for _ in range(6):
        opt.apply([ops.zeros_like(kernel), ops.zeros_like(bias)], [kernel, bias])
    # Zero gradients: only decoupled decay moves the kernel, sum of sched*wd/lr*lr_t.
    lrs = [float(sched(i)) for i in range(6)]
    expected = k0 * np.prod([1 - lr * 1e-3 / 1e-2 for lr in lrs])
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(float(opt.learning_rate), float(sched(6)), rtol=1e-6)
    assert not np.allclose(kernel.numpy(), k0)
    np.testing.assert_array_equal(bias.numpy(), np.ones(3))


@pytest.mark.slow
def test_mobilenet_v3_students_are_registered_and_distil():
    from kdzoo.models.common import stage_names
    from kdzoo.zoo.registry import architectures

    archs = architectures()
    for name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        assert archs[name].family == "mobilenet"
    student = archs["mobilenet_v3_small"].builder(num_classes=5, input_shape=(32, 32, 3))
    assert stage_names(student) == ["stage1", "stage2", "stage3", "stage4"]
    assert student.get_layer("preprocess") is not None
    assert isinstance(student.get_layer("head"), keras.layers.Dense)
    with pytest.raises(ValueError, match="weights=None"):
        archs["mobilenet_v3_small"].builder(weights="imagenet")
    d = FunMatchDistiller(tiny(size=32), student, variant="funmatch", image_size=32)
    # One eager step: tracing+optimising MobileNet's training graph costs ~30 s on
    # 2 busy CPU cores (plain keras.applications fit does too), an eager step ~3 s.
    d.compile(optimizer="adam", run_eagerly=True)
    before = weights_of(student)
    hist = d.fit(smooth_images(8, 36), batch_size=8, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, weights_of(student)))


# ------------------------------------------ precision / XLA / distribution ---
@pytest.mark.slow
def test_mixed_precision_and_jit_compile():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        teacher, student = tiny(name="t"), tiny(name="s")
        d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=16,
                              temperature=2.0)
        d.compile(optimizer="adam", jit_compile=True)
        before = weights_of(student)
        imgs = smooth_images(16, 20)
        # 20 px validation images: the eval resize runs inside the XLA step too.
        hist = d.fit(imgs, batch_size=8, epochs=2, verbose=0,
                     validation_data=(imgs, np.zeros(16)))
    finally:
        keras.config.set_dtype_policy("float32")
    assert d.jit_compile is True
    assert isinstance(d.optimizer, keras.optimizers.LossScaleOptimizer)
    assert student.layers[-1].compute_dtype == "float16"
    assert all(v.dtype == "float32" for v in student.trainable_variables)
    assert all(np.isfinite(hist.history[k]).all() for k in hist.history)
    assert any(not np.array_equal(a, b) for a, b in zip(before, weights_of(student)))


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    sys.path[:0] = [{tests!r} + '/../..']  # tests/, for helpers
    from helpers import tiny_convnet as tiny, smooth_images, weights_of
    from kdzoo.distill.funmatch import FunMatchDistiller

    imgs = smooth_images(16, 20)
    out = {{}}
    def run(strategy, variant):
        with strategy.scope():
            t, s = tiny(name="t", seed=1), tiny(name="s", seed=2)
            d = FunMatchDistiller(t, s, variant=variant, image_size=16, seed=3)
            d.compile(optimizer=keras.optimizers.SGD(0.5))
        t0 = weights_of(t)
        h = d.fit(imgs, batch_size=8, epochs=1, verbose=0,
                  validation_data=(imgs[:, :16, :16], np.zeros(16)))
        frozen = all(np.array_equal(a, b) for a, b in zip(t0, weights_of(t)))
        return weights_of(s), h.history, frozen
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out["replicas"] = mirrored.num_replicas_in_sync
    for variant in ("funmatch", "fix/cc"):
        w1, h1, f1 = run(mirrored, variant)
        w0, h0, f0 = run(tf.distribute.get_strategy(), variant)
        out[variant] = dict(
            max_diff=max(float(np.abs(a - b).max()) for a, b in zip(w0, w1)),
            moved=max(float(np.abs(a - b).max()) for a, b in zip(w0, weights_of(
                tiny(name="s0", seed=2)))),
            loss=[h0["loss"][0], h1["loss"][0]], frozen=f1 and f0,
            val_agreement=h1["val_agreement"][0])
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_mirrored_strategy_on_two_logical_cpus():
    script = MIRRORED_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT"):])
    assert out["replicas"] == 2
    for variant in ("funmatch", "fix/cc"):
        r = out[variant]
        assert r["frozen"], r
        assert r["moved"] > 1e-3, r  # training happened ...
        assert r["max_diff"] < 1e-5, r  # ... and 2 replicas = 1 device, step for step
        # The KL is a sum of O(1) terms that cancel to ~1e-3 here: its float32 error is
        # absolute (~1e-7), whatever its size, hence the atol.
        np.testing.assert_allclose(r["loss"][0], r["loss"][1], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- learning ---
@pytest.mark.slow
def test_student_learns_the_teachers_function_on_fashion_mnist():
    from kdzoo.data import fashion_mnist

    try:
        x_train, y_train = fashion_mnist.load("train")
        x_test, y_test = fashion_mnist.load("test")
    except (FileNotFoundError, ValueError) as e:
        pytest.skip(f"Fashion-MNIST unavailable: {e}")
    keras.utils.set_random_seed(0)
    teacher = fmnist_cnn(12, name="teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    teacher.fit(x_train[:12000], y_train[:12000], batch_size=128, epochs=1, verbose=0)

    student = fmnist_cnn(8, name="student")
    d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=28,
                          temperature=1.0, seed=0)
    unlabeled = x_train[12000:20000]  # images the teacher never trained on; no labels
    epochs, batch = 2, 128
    d.compile(optimizer=kd.paper_optimizer(1e-2, total_steps=epochs * (8000 // batch),
                                           warmup_steps=20, weight_decay=1e-4))
    held_out = (x_test[:3000], y_test[:3000])
    before = d.evaluate(*held_out, batch_size=500, verbose=0, return_dict=True)
    d.fit(unlabeled, batch_size=batch, epochs=epochs, verbose=0)
    after = d.evaluate(*held_out, batch_size=500, verbose=0, return_dict=True)
    print("\nFashion-MNIST funmatch: before", {k: round(v, 3) for k, v in before.items()},
          "after", {k: round(v, 3) for k, v in after.items()})
    assert after["teacher_accuracy"] > 0.7
    assert after["agreement"] > 0.75 and after["agreement"] > before["agreement"] + 0.4
    assert after["accuracy"] > 0.6
