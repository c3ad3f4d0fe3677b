"""Teacher-output cache: cached == online training, refusals, corruption, no teacher call.

Small Fashion-MNIST CNNs (28 px, 256 real images), a few epochs each.
Run: python -m pytest tests/distill/funmatch/test_teacher_cache.py -x -q
"""

import functools
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdzoo.distill as kd
from kdzoo.data import fashion_mnist
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.distill.funmatch.teacher_cache import (open_teacher_cache, targets_from_cache,
                                                  teacher_fingerprint)
from kdzoo.errors import CheckpointError

# Counts the images the teacher runs on. Global (not a layer weight) so that it
# does not enter the teacher's weights fingerprint.
TEACHER_IMAGES = tf.Variable(0, dtype=tf.int64, trainable=False)


class CountImages(keras.layers.Layer):
    def call(self, x):
        TEACHER_IMAGES.assign_add(tf.cast(tf.shape(x)[0], tf.int64))
        return x


def cnn(width, seed, name, sharpness=1.0, counter=False, size=28):
    """A small seeded convnet; ``sharpness`` scales its logits (a confident teacher)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((size, size, 1))
    x = CountImages()(inputs) if counter else inputs
    x = keras.layers.Rescaling(1 / 255.0)(x)
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=init)(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=init)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10, kernel_initializer=init)(x)
    if sharpness != 1.0:
        x = keras.layers.Rescaling(sharpness)(x)
    return keras.Model(inputs, x, name=name)


@pytest.fixture(scope="module")
def images():
    x, _ = fashion_mnist.load("train")
    return np.ascontiguousarray(x[:256])


@pytest.fixture(scope="module")
def teacher():
    """A teacher trained briefly on labels, so its outputs are confident and structured."""
    x, y = fashion_mnist.load("train")
    model = cnn(16, seed=1, name="teacher", counter=True, sharpness=4.0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[-3072:], y[-3072:], batch_size=64, epochs=2, verbose=0)
    return model


def distiller(teacher, seed=3, student_seed=2, temperature=2.0, **kwargs):
    kwargs.setdefault("image_size", 28)
    d = FunMatchDistiller(teacher, cnn(4, student_seed, "student"), variant="funmatch",
                          temperature=temperature, seed=seed, **kwargs)
    d.compile(optimizer=keras.optimizers.Adam(3e-3, global_clipnorm=1.0))
    return d


def grid_point(teacher, point):
    """One grid point's distiller: the point's temperature and learning rate."""
    d = FunMatchDistiller(teacher, cnn(4, 2, "student"), variant="funmatch",
                          temperature=point["temperature"], seed=3, image_size=28)
    d.compile(optimizer=keras.optimizers.Adam(point["lr"], global_clipnorm=1.0))
    return d


def train(d, images, epochs, batch_size=32):
    d.fit(images, batch_size=batch_size, epochs=epochs, verbose=0)
    return [w.numpy().copy() for w in d.student.weights]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def prediction_gap(student, weights_a, weights_b, x):
    """Mean total-variation distance between the student's predictions with two weight sets."""
    probs = []
    for w in (weights_a, weights_b):
        student.set_weights(w)
        probs.append(tf.nn.softmax(student(x.astype("float32"), training=False)).numpy())
    return float(0.5 * np.abs(probs[0] - probs[1]).sum(-1).mean())


@pytest.fixture(scope="module")
def caches(tmp_path_factory, teacher, images):
    """Caches of epochs [0, 3), batch 32: all 10 logits in float16, and the top 3."""
    root = tmp_path_factory.mktemp("caches")
    d = distiller(teacher)
    full = kd.cache_teacher(d, images, root / "full.tcache", epochs=3, batch_size=32)
    top5 = kd.cache_teacher(d, images, root / "top5.tcache", epochs=3, batch_size=32,
                            top_k=5)
    return {"full": full.path, "top5": top5.path, "root": root}


# ------------------------------------------------------------ equivalence ---
@pytest.mark.slow
def test_cached_training_gives_the_same_student_as_online(teacher, images, caches):
    initial = [w.numpy().copy() for w in distiller(teacher).student.weights]
    online = train(distiller(teacher), images, epochs=3)
    full = distiller(teacher)
    cache = full.use_teacher_cache(caches["full"])
    assert cache.epochs == (0, 3) and cache.steps_per_epoch == 8 and cache.top_k == 10
    full = train(full, images, epochs=3)
    top5 = distiller(teacher)
    top5.use_teacher_cache(caches["top5"])
    top5 = train(top5, images, epochs=3)
    # float16 logits of every class: only rounding (~1e-3 relative on the logits).
    assert max_diff(online, full) < 2e-3
    # Judge the student by its function on held-out images. top-5 + tail mean drops
    # mass (this teacher is soft on mixed views); the student's predictions may differ
    # by about as much as the cached targets do from the exact ones, and no more.
    x_test, _ = fashion_mnist.load("test")
    x_test = x_test[:512]
    probe = cnn(4, 2, "probe")
    gap = {name: prediction_gap(probe, online, w, x_test)
           for name, w in [("full", full), ("top5", top5), ("initial", initial)]}
    compression = target_gap(teacher, images, caches["top5"])
    assert gap["full"] < 1e-4, gap
    assert 0.01 < compression < 0.2 and gap["top5"] < 1.5 * compression, (gap, compression)
    assert gap["top5"] < 0.5 * gap["initial"], gap  # training moved the student much more


def target_gap(teacher, images, path):
    """Mean total-variation distance of cached targets from the teacher's, over one epoch."""
    d = distiller(teacher)
    online = list(d.make_train_dataset(images, 32).take(8))
    d.use_teacher_cache(path)
    cached = list(d.make_train_dataset(images, 32).take(8))
    return float(np.mean([0.5 * np.abs(d.teacher_probs(a["student"]).numpy()
                                       - b["targets"].numpy()).sum(-1).mean()
                          for a, b in zip(online, cached)]))


@pytest.mark.slow
def test_cached_targets_match_the_teacher_at_any_temperature(teacher, images, caches):
    for temperature in (1.0, 4.0):
        d = distiller(teacher, temperature=temperature)
        online = next(iter(d.make_train_dataset(images, 32)))
        expected = d.teacher_probs(online["student"]).numpy()
        d.use_teacher_cache(caches["full"])
        cached = next(iter(d.make_train_dataset(images, 32)))
        assert set(cached) == {"student", "targets"}
        np.testing.assert_array_equal(cached["student"].numpy(), online["student"].numpy())
        np.testing.assert_allclose(cached["targets"].numpy(), expected, atol=2e-3)
        d.use_teacher_cache(caches["top5"])
        top5 = next(iter(d.make_train_dataset(images, 32)))["targets"].numpy()
        np.testing.assert_allclose(top5.sum(-1), 1.0, rtol=1e-5)
        np.testing.assert_array_equal(top5.argmax(-1), expected.argmax(-1))
    # A resumed stream (initial_epoch=2) reads epoch 2's entries.
    d = distiller(teacher)
    step0 = next(iter(d.make_train_dataset(images, 32, initial_epoch=2)))
    d.use_teacher_cache(caches["full"])
    cached = next(iter(d.make_train_dataset(images, 32, initial_epoch=2)))
    np.testing.assert_allclose(cached["targets"].numpy(),
                               d.teacher_probs(step0["student"]).numpy(), atol=2e-3)


def test_targets_from_cache_rebuilds_dropped_classes_from_the_tail_mean():
    logits = np.array([[[3.0, 1.0, 0.0, -2.0]]], np.float32)  # [B=1, M=1, K=4]
    full = targets_from_cache(logits, None, None, 4, 2.0)
    np.testing.assert_allclose(full, tf.nn.softmax(logits[:, 0] / 2.0).numpy(), rtol=1e-6)
    top2 = targets_from_cache(logits[..., :2], np.array([[[0, 1]]]), np.array([[-1.0]]), 4,
                              2.0)
    expected = tf.nn.softmax(np.array([[3.0, 1.0, -1.0, -1.0]]) / 2.0).numpy()
    np.testing.assert_allclose(top2, expected, rtol=1e-6)
    # Ensembles average the tempered probabilities of each teacher.
    two = np.stack([logits[:, 0], logits[:, 0][:, ::-1]], axis=1)
    mean = targets_from_cache(two, None, None, 4, 1.0)
    np.testing.assert_allclose(mean, 0.5 * (tf.nn.softmax(two[:, 0]) +
                                            tf.nn.softmax(two[:, 1])).numpy(), rtol=1e-6)


def test_ensemble_teacher_cache(images, tmp_path):
    teachers = [cnn(8, seed=5, name="t1", sharpness=10.0),
                cnn(8, seed=6, name="t2", sharpness=10.0)]
    d = distiller(teachers)
    batch = next(iter(d.make_train_dataset(images, 64)))
    expected = d.teacher_member_probs(batch["student"]).numpy()  # [64, 2, 10]
    kd.cache_teacher(d, images, tmp_path / "ens.tcache", epochs=1, batch_size=64)
    cache = d.use_teacher_cache(tmp_path / "ens.tcache")
    assert cache.header["num_teachers"] == 2
    # One distribution per teacher, so the loss can sum the per-teacher KLs (the default).
    got = next(iter(d.make_train_dataset(images, 64)))["targets"].numpy()
    assert got.shape == (64, 2, 10)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert np.abs(got[:, 0] - got[:, 1]).max() > 0.1  # two different teachers


# --------------------------------------------------------- teacher never run ---
@pytest.mark.slow
def test_training_from_the_cache_never_runs_the_teacher(teacher, images, tmp_path):
    d = distiller(teacher)
    before = int(TEACHER_IMAGES.numpy())
    kd.cache_teacher(d, images, tmp_path / "c.tcache", epochs=2, batch_size=64)
    assert int(TEACHER_IMAGES.numpy()) - before == 2 * 4 * 64  # once per cached view
    d.use_teacher_cache(tmp_path / "c.tcache")
    before = int(TEACHER_IMAGES.numpy())
    hist = d.fit(images, batch_size=64, epochs=2, verbose=0)
    assert int(TEACHER_IMAGES.numpy()) == before
    assert np.isfinite(hist.history["loss"]).all()
    # Resume inside the cached range, then detach: the online teacher runs again.
    d.fit(images, batch_size=64, initial_epoch=1, epochs=2, verbose=0)
    assert int(TEACHER_IMAGES.numpy()) == before
    d.use_teacher_cache(None)
    d.fit(images, batch_size=64, epochs=1, verbose=0)
    assert int(TEACHER_IMAGES.numpy()) == before + 4 * 64


# --------------------------------------------------------------- refusals ---
def test_mismatched_settings_are_refused(teacher, images, caches):
    path = caches["full"]
    name = os.path.basename(path)
    cases = [
        (dict(seed=7), "seed"),
        (dict(image_size=24), "image_size"),
        (dict(mixup_alpha=0.5), "mixup_alpha"),
    ]
    for kwargs, what in cases:
        t = teacher if "image_size" not in kwargs else cnn(16, 1, "t24", size=24)
        s_size = kwargs.get("image_size", 28)
        d = FunMatchDistiller(t, cnn(4, 2, "s", size=s_size), variant="funmatch",
                              temperature=2.0, **dict(dict(seed=3, image_size=28), **kwargs))
        with pytest.raises(CheckpointError, match=what) as err:
            d.use_teacher_cache(path)
        assert name in str(err.value)
    d = FunMatchDistiller(teacher, cnn(4, 2, "s"), variant="same/ic", image_size=28, seed=3)
    with pytest.raises(CheckpointError, match="variant"):
        d.use_teacher_cache(path)
    d = FunMatchDistiller(teacher, cnn(4, 2, "s"), variant="fix/rs", image_size=28, seed=3)
    with pytest.raises(ValueError, match="prepare_targets"):
        d.use_teacher_cache(path)
    # Another teacher: same architecture, other weights.
    d = distiller(cnn(16, seed=9, name="teacher"))
    with pytest.raises(CheckpointError, match="another teacher") as err:
        d.use_teacher_cache(path)
    assert name in str(err.value)
    # Stream settings: batch size, images, epochs.
    d = distiller(teacher)
    d.use_teacher_cache(path)
    with pytest.raises(CheckpointError, match="batch_size"):
        d.fit(images, batch_size=16, epochs=1, verbose=0)
    with pytest.raises(CheckpointError, match="num_images"):
        d.fit(images[:128], batch_size=32, epochs=1, verbose=0)
    with pytest.raises(CheckpointError, match="other train images"):
        d.fit(images[::-1].copy(), batch_size=32, epochs=1, verbose=0)
    with pytest.raises(CheckpointError, match=r"covers epochs \[0, 3\)") as err:
        d.fit(images, batch_size=32, epochs=4, verbose=0)
    assert name in str(err.value)
    with pytest.raises(CheckpointError, match=r"covers epochs \[0, 3\)"):
        d.make_train_dataset(images, 32, initial_epoch=3)
    with pytest.raises(CheckpointError, match="shuffle"):
        d.make_train_dataset(images, 32, shuffle=False)


def test_truncated_or_corrupt_files_are_detected(caches):
    root, src = caches["root"], caches["full"]
    data = open(src, "rb").read()
    cut = root / "cut.tcache"
    for size in (len(data) - 1, len(data) // 2, 20):
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="cut.tcache"):
            open_teacher_cache(cut)
    bad = root / "bad.tcache"
    flipped = bytearray(data)
    flipped[100] ^= 0xFF  # inside epoch 0's logits
    bad.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="epoch 0 fails its sha256"):
        open_teacher_cache(bad)
    assert open_teacher_cache(bad, verify=False).epochs == (0, 3)  # opt-out of the scan
    header = bytearray(data)
    header[-200] ^= 0x01  # inside the JSON header
    bad.write_bytes(bytes(header))
    with pytest.raises(CheckpointError, match="header"):
        open_teacher_cache(bad)
    (root / "junk.tcache").write_bytes(b"not a cache at all" * 10)
    with pytest.raises(CheckpointError, match="not a kdzoo teacher cache"):
        open_teacher_cache(root / "junk.tcache")
    with pytest.raises(FileNotFoundError):
        open_teacher_cache(root / "missing.tcache")


def test_cache_is_written_atomically(teacher, images, tmp_path, monkeypatch):
    d = distiller(teacher)
    target = tmp_path / "a.tcache"
    shutil.copy(os.fspath(_first_cache(tmp_path, d, images)), target)
    original = target.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(np, "stack", boom)
    with pytest.raises(RuntimeError, match="killed"):
        kd.cache_teacher(d, images, target, epochs=1, batch_size=128)
    assert target.read_bytes() == original  # the old file is intact
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def _first_cache(tmp_path, d, images):
    return kd.cache_teacher(d, images, tmp_path / "first.tcache", epochs=1,
                            batch_size=128).path


def test_header_records_the_stream(caches, teacher):
    h = open_teacher_cache(caches["top5"]).header
    assert h["stores"] == "logits" and h["top_k"] == 5 and h["num_classes"] == 10
    assert (h["seed"], h["epochs"], h["batch_size"], h["num_images"]) == (3, [0, 3], 32, 256)
    assert (h["image_size"], h["teacher_image_size"], h["variant"]) == (28, 28, "funmatch")
    assert h["value_dtype"] == "<f2" and h["index_dtype"] == "<i2"
    assert len(h["teacher_sha256"]) == 1 and len(h["epoch_sha256"]) == 3
    assert h["teacher_sha256"][0] == teacher_fingerprint(teacher)
    size = os.path.getsize(caches["top5"])
    # Compact: 22 bytes per view (5 x (float16 + int16) + a float16 tail) + the header.
    assert size < 3 * 8 * 32 * (5 * 4 + 2) + 4096


# ------------------------------------------------ one cache for the whole grid ---
def test_grid_axes_and_sharing_groups():
    from kdzoo.train import grid
    assert len(grid.expand_grid(grid.AUTHORS_SWEEP)) == 3 * 3 * 4 * 5  # bigsweep_food_sun
    swept = grid.with_epochs(grid.FUNMATCH_GRID, (1000, 3000))
    points = grid.expand_grid(swept)
    assert len(points) == 160 and list(swept)[0] == "epochs"
    assert points[0]["epochs"] == 1000 and points[80]["epochs"] == 3000
    # lr x wd x T x epochs never change a view: one group, one cache.
    assert grid.teacher_cache_groups(points) == [({}, list(range(160)))]
    mixed = [dict(p, variant=v) for p in points[:3] for v in ("funmatch", "same/ic")]
    groups = grid.teacher_cache_groups(mixed)
    assert groups == [({"variant": "funmatch"}, [0, 2, 4]), ({"variant": "same/ic"}, [1, 3, 5])]
    with pytest.raises(ValueError, match="positive ints"):
        grid.with_epochs(grid.FUNMATCH_GRID, (0,))
    with pytest.raises(ValueError, match=r"differ in \['variant'\].*teacher_cache_groups"):
        grid.fit_grid_from_one_cache(lambda p: None, None, mixed, "unused", batch_size=8)


@pytest.mark.slow
def test_one_cache_serves_every_grid_point(teacher, images, tmp_path):
    from kdzoo.train import grid
    points = grid.expand_grid({"epochs": (1, 2), "lr": (1e-3, 3e-3), "temperature": (1.0, 4.0)})

    make = functools.partial(grid_point, teacher)

    before = int(TEACHER_IMAGES.numpy())
    trained = grid.fit_grid_from_one_cache(
        make, images, points, tmp_path / "grid.tcache", batch_size=64, dtype="float32",
        fit_point=lambda d, p, n: train(d, images, n, batch_size=64))
    # The teacher ran once per view of the longest point (2 epochs x 4 steps x 64), not 8x.
    assert int(TEACHER_IMAGES.numpy()) - before == 2 * 4 * 64
    # Each point equals its own run with an online teacher (T applied when read; a
    # 1-epoch point reads the first epoch of the 2-epoch cache).
    for index in (0, 5):  # (1 epoch, lr 1e-3, T 1) and (2 epochs, lr 1e-3, T 4)
        point = points[index]
        online = train(make(point), images, point["epochs"], batch_size=64)
        assert max_diff(online, trained[index]) < 1e-4, (index, point)
    assert max_diff(trained[0], trained[1]) > 1e-3  # T changes the result


@pytest.mark.slow
def test_lockstep_points_equal_their_own_runs_with_one_teacher_pass(teacher, images):
    from kdzoo.train import grid
    points = grid.expand_grid({"lr": (1e-3, 3e-3), "temperature": (1.0, 4.0)})

    make = functools.partial(grid_point, teacher)

    before = int(TEACHER_IMAGES.numpy())
    trained = grid.fit_grid_lockstep(make, images, points, batch_size=64, epochs=2)
    # One teacher pass per step for the 4 points: 2 epochs x 4 steps x 64 images.
    assert int(TEACHER_IMAGES.numpy()) - before == 2 * 4 * 64
    weights = [[w.numpy() for w in d.student.weights] for d in trained]
    for index in (0, 3):  # (lr 1e-3, T 1) and (lr 3e-3, T 4), each trained alone
        alone = train(make(points[index]), images, 2, batch_size=64)
        assert max_diff(alone, weights[index]) < 1e-5, points[index]
    assert max_diff(weights[0], weights[1]) > 1e-3 and max_diff(weights[0], weights[2]) > 1e-3
    assert all(int(d.optimizer.iterations.numpy()) == 8 for d in trained)


def test_lockstep_refuses_points_that_do_not_share_views(teacher):
    from kdzoo.distill.funmatch.lockstep import LockstepGrid
    with pytest.raises(ValueError, match=r"differs from point 0 in \['seed'\]"):
        LockstepGrid([distiller(teacher, seed=3), distiller(teacher, seed=4)])
    other = FunMatchDistiller(cnn(8, 5, "other_teacher"), cnn(4, 2, "student"),
                              image_size=28)
    other.compile(optimizer="adam")
    with pytest.raises(ValueError, match="another teacher"):
        LockstepGrid([distiller(teacher), other])
    uncompiled = FunMatchDistiller(teacher, cnn(4, 2, "student"), temperature=2.0, seed=3,
                                   image_size=28)
    with pytest.raises(ValueError, match="Point 1's distiller is not compiled"):
        LockstepGrid([distiller(teacher), uncompiled])
    fixed = FunMatchDistiller(teacher, cnn(4, 2, "student"), variant="fix/rs", image_size=28)
    fixed.compile(optimizer="adam")
    with pytest.raises(ValueError, match="reads stored targets"):
        LockstepGrid([fixed])


def test_a_cached_stream_starts_at_any_step_as_a_resumed_run_does(teacher, images, tmp_path):
    """Resuming at step s (mid data epoch) reads the cache from step s: the same views and
    targets as batch s of the uninterrupted stream; steps past the cache are refused."""
    d = distiller(teacher)
    cache = kd.cache_teacher(d, images, tmp_path / "c.tcache", epochs=2, batch_size=64,
                             dtype="float32")  # 4 steps per epoch
    d.use_teacher_cache(cache)
    whole = list(d.make_train_dataset(images, 64, initial_step=0, num_images=256).take(8))
    for step in (1, 5, 7):
        resumed = next(iter(d.make_train_dataset(images, 64, initial_step=step, num_images=256)))
        for key in ("student", "targets"):
            np.testing.assert_array_equal(resumed[key].numpy(), whole[step][key].numpy())
    cache.check_steps(5, 8)
    with pytest.raises(CheckpointError, match=r"holds steps \[0, 8\).*needs \[5, 9\)"):
        cache.check_steps(5, 9)
    # fit on a prepared stream is checked in steps too: 3 epochs of 4 steps > the cache's 8
    d.compile(optimizer=keras.optimizers.Adam(1e-3))
    prepared = d.make_train_dataset(images, 64, num_images=256)
    with pytest.raises(CheckpointError, match=r"holds steps \[0, 8\).*needs \[0, 12\)"):
        d.fit(prepared, epochs=3, steps_per_epoch=4, verbose=0)
