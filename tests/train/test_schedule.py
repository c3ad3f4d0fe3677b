"""The authors' schedule and stream, scalable checkpoints, damaged-resume fallback,
BackupAndRestore resume and the authors' evaluation preprocessing (issues 14, 15)."""

import json
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdzoo.train import checkpointing
from kdzoo.distill import FunMatchDistiller
from kdzoo.data import stream as streams
from kdzoo.train import make_schedule
from helpers import tiny_convnet


def tiny(name, seed, size=16, classes=5):
    """This file's convnet (one valid-padded conv, [0, 1] rescaling), global seed ``seed``."""
    keras.utils.set_random_seed(seed)
    return tiny_convnet(size, classes, name=name, width=4, convs=1, scale=1 / 255.0,
                        offset=0.0, padding="valid", relu="fused",
                        kernel_initializer="glorot_uniform")


def smooth_images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0, 6, 3)
        img = np.stack([np.sin(a * yy + b * xx + c), np.cos(b * yy - a * xx),
                        np.sin(c * xx) * np.cos(a * yy)], -1)
        out.append(((img + 1) * 127.5).astype(np.uint8))
    return np.stack(out)


# ------------------------------------------------------------ schedule -------
def test_total_steps_are_the_authors_rounded_count():
    # By hand: 10,000 * 1,020 / 512 = 19,921.875; 1,000 * 3,312 / 512 = 6,468.75.
    assert streams.total_steps(10_000, 1_020, 512) == 19_922
    assert streams.total_steps(1_000, 3_312, 512) == 6_469
    assert streams.total_steps(1, 10, 512) == 1          # max(round(0.02), 1)
    assert streams.total_steps(3, 10, 4) == 8            # round(7.5): half to even
    s = make_schedule(10_000, 1_020, 512, log_every_steps=500, checkpoint_every_steps=5000,
                      warmup_steps=1500)
    # 39 full intervals of 500 = 19,500 steps, then 422.
    assert (s.total_steps, s.interval, s.epochs, s.last_epoch_steps) == (19_922, 500, 40, 422)
    assert s.checkpoint_every_steps == 5000 and s.warmup_steps == 1500
    assert s.step_of(39) == 19_500 and s.step_of(40) == 19_922
    long = make_schedule(1_000_000, 1_020, 512)  # flowers 'long': thousands of steps apart
    assert long.total_steps == 1_992_188 and long.checkpoint_every_steps >= 1000
    with pytest.raises(ValueError, match="checkpoint_every_steps must be a positive int"):
        make_schedule(1, 10, 2, checkpoint_every_steps=0)


def _index_stream(n, batch, steps, initial_step=0, shuffle=0):
    base = tf.data.Dataset.range(n).map(lambda i: (i, i * 10))
    ds = streams.train_stream(base, batch_size=batch, seed=3, num_examples=n,
                              initial_step=initial_step, shuffle_buffer=shuffle,
                              per_image=lambda epoch, i, v: (epoch, i, v),
                              per_batch=lambda step, b: (step, *b))
    return [tuple(t.numpy() for t in b) for b in ds.take(steps)]


@pytest.mark.slow
def test_stream_runs_epochs_back_to_back_without_dropping_images():
    got = _index_stream(10, 4, 5)
    # 20 images = 2 data epochs in order; the third batch straddles the epoch end.
    assert [list(b[2]) for b in got] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1],
                                         [2, 3, 4, 5], [6, 7, 8, 9]]
    assert list(got[2][1]) == [0, 0, 1, 1] and [b[0] for b in got] == [0, 1, 2, 3, 4]
    shuffled = _index_stream(10, 4, 10, shuffle=10)
    flat = np.concatenate([b[2] for b in shuffled])
    epochs = np.concatenate([b[1] for b in shuffled])
    for e in range(4):  # each data epoch is a permutation of the split
        assert sorted(flat[epochs == e]) == list(range(10))
    assert not np.array_equal(flat[:10], flat[10:20])  # reshuffled per epoch


@pytest.mark.parametrize("step", [1, 2, 3, 7])
def test_stream_resumed_at_any_step_equals_the_uninterrupted_one(step):
    whole = _index_stream(10, 4, 10, shuffle=10)
    resumed = _index_stream(10, 4, 10 - step, initial_step=step, shuffle=10)
    for a, b in zip(whole[step:], resumed, strict=True):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_funmatch_stream_resumes_mid_epoch_with_views_and_mixup():
    imgs = smooth_images(12, 24)
    d = FunMatchDistiller(tiny("t", 1), tiny("s", 2), variant="funmatch", image_size=16, seed=4)
    whole = [b["student"].numpy() for b in d.make_train_dataset(imgs, 8).take(4)]
    # Step 1 holds images 8..11 of epoch 0 and 0..3 of epoch 1 (12 / 8 is not whole).
    later = [b["student"].numpy()
             for b in d.make_train_dataset(imgs, 8, initial_step=1).take(3)]
    for a, b in zip(whole[1:], later, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------- checkpoints -------
def _distiller(seed=2):
    d = FunMatchDistiller(tiny("t", 1), tiny("s", seed), variant="same/ic", image_size=16,
                          seed=0)
    d.compile(optimizer=keras.optimizers.Adam(1e-2))
    return d


def test_checkpoint_holds_the_student_and_optimizer_but_never_the_teacher(tmp_path):
    d = _distiller()
    d.fit(smooth_images(8, 20), batch_size=4, epochs=1, verbose=0)
    saver = checkpointing.ResumableCheckpoint(str(tmp_path))
    saver.set_model(d)
    saver.save(1)
    path = str(tmp_path / "ckpt-000001.weights.h5")
    student_opt = keras.optimizers.Adam(1e-2)  # the same optimizer, built on the student only
    student_opt.build(d.student.trainable_variables)
    expected = len(d.student.weights) + len(student_opt.variables)
    assert checkpointing.checkpoint_variable_count(path) == expected
    assert len(d.teacher.weights) > 0
    fresh = _distiller(seed=9)
    assert checkpointing.restore(fresh, str(tmp_path)) == 1
    for a, b in zip(d.student.get_weights(), fresh.student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations) == 2
    for a, b in zip(d.teacher.get_weights(), fresh.teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # teacher from its own source, not the file


def _two_checkpoints(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    saver = checkpointing.ResumableCheckpoint(str(tmp_path), keep=3)
    saver.set_model(model)
    model.layers[0].kernel.assign(np.full((2, 1), 1.0, "float32"))
    saver.save(1)
    model.layers[0].kernel.assign(np.full((2, 1), 2.0, "float32"))
    saver.save(2)
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])


def test_truncated_newest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path):
    fresh = _two_checkpoints(tmp_path)
    newest = tmp_path / "ckpt-000002.weights.h5"
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    with pytest.warns(RuntimeWarning, match=r"ckpt-000002\.weights\.h5.*falling back to "
                                            r"ckpt-000001"):
        assert checkpointing.restore(fresh, str(tmp_path)) == 1
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), np.full((2, 1), 1.0))


def _flip_a_kernel_byte(path):
    """Flip one bit of the stored kernel's data (not of HDF5's own metadata)."""
    import h5py
    with h5py.File(path, "r") as f:
        offset = f["layers/dense/vars/0"].id.get_offset()
    with open(path, "r+b") as f:
        f.seek(offset + 2)
        byte = f.read(1)
        f.seek(offset + 2)
        f.write(bytes([byte[0] ^ 0x40]))


def test_flipped_bytes_in_the_newest_checkpoint_fall_back_to_the_previous(tmp_path):
    fresh = _two_checkpoints(tmp_path)
    _flip_a_kernel_byte(tmp_path / "ckpt-000002.weights.h5")
    with pytest.warns(RuntimeWarning, match=r"ckpt-000002\.weights\.h5.*sha256.*falling back "
                                            r"to ckpt-000001"):
        assert checkpointing.restore(fresh, str(tmp_path)) == 1
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), np.full((2, 1), 1.0))


def test_checkpoints_of_older_kdzoo_without_a_recorded_sha256_still_load(tmp_path):
    fresh = _two_checkpoints(tmp_path)
    # What kdzoo wrote before sha256s were recorded: the newest file's name and step only.
    (tmp_path / "state.json").write_text(json.dumps(
        {"epoch": 2, "step": 0, "weights": "ckpt-000002.weights.h5"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert checkpointing.restore(fresh, str(tmp_path)) == 2
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), np.full((2, 1), 2.0))


@pytest.mark.parametrize("damage", ["", "{not json", '{"epoch": 2}'])
def test_damaged_state_json_falls_back_to_the_newest_file_with_a_warning(tmp_path, damage):
    fresh = _two_checkpoints(tmp_path)
    (tmp_path / "state.json").write_text(damage)
    with pytest.warns(RuntimeWarning, match=r"state\.json is damaged.*ckpt-000002"):
        assert checkpointing.restore(fresh, str(tmp_path)) == 2
    np.testing.assert_array_equal(fresh.layers[0].kernel.numpy(), np.full((2, 1), 2.0))


def test_checkpoints_every_minutes_keep_the_last_k(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    clock = [0.0]
    monkeypatch.setattr(checkpointing.time, "monotonic", lambda: clock[0])
    saver = checkpointing.ResumableCheckpoint(str(tmp_path), every=100, keep=2,
                                              every_minutes=10)
    saver.set_model(model)
    saver.on_train_begin()
    for epoch, minute in enumerate([1, 5, 11, 12, 30, 31]):
        clock[0] = 60.0 * minute
        saver.on_epoch_end(epoch)
    # Saved after minute 11 (epoch 3) and minute 30 (epoch 5: 19 min after 11); keep 2.
    assert [f for _, f in checkpointing.checkpoint_files(str(tmp_path))] == [
        "ckpt-000005.weights.h5", "ckpt-000003.weights.h5"]
    saver.on_train_end()  # the last epoch (6) is always written
    assert checkpointing.read_state(str(tmp_path))["epoch"] == 6


# ------------------------------------------------- BackupAndRestore resume -----
class _Stop(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("preempted")


@pytest.mark.slow
def test_backup_and_restore_resume_continues_the_exact_stream(tmp_path):
    imgs = smooth_images(16, 20)
    whole = _distiller()
    whole.fit(imgs, batch_size=8, epochs=3, verbose=0)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = _distiller()
    with pytest.raises(KeyboardInterrupt):
        first.fit(imgs, batch_size=8, epochs=3, verbose=0, callbacks=[backup, _Stop()])
    again = _distiller(seed=7)  # another init: the backup must replace it
    hist = again.fit(imgs, batch_size=8, epochs=3, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert len(hist.history["loss"]) == 1  # only epoch 3 ran
    for a, b in zip(whole.student.get_weights(), again.student.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


# ----------------------------------------------------------- evaluation ------
def _area_half(image):
    """Area downscaling by exactly 2: the mean of each 2x2 block (by hand)."""
    h, w, c = image.shape
    return image.reshape(h // 2, 2, w // 2, 2, c).mean(axis=(1, 3))


def test_eval_is_resize_small_then_central_crop():
    from kdzoo.data import eval_preprocess
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (320, 400, 3)).astype(np.uint8)
    # resize_small(160): 320x400 -> 160x200 (factor 2), then the central 128x128:
    # rows (160 - 128) // 2 = 16.., columns (200 - 128) // 2 = 36..
    expected = _area_half(image.astype(np.float64))[16:144, 36:164]
    got = eval_preprocess(tf.constant(image), 128, 160).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)

    d = FunMatchDistiller(tiny("t", 1, size=32), tiny("s", 2, size=16), image_size=16,
                          teacher_image_size=32)
    ds = tf.data.Dataset.from_tensors((image, 0))
    views, _ = next(iter(d.make_eval_dataset(ds, 1, resize_small=20)))
    # student: 320x400 -> resize_small(20) = factor 16 -> 20x25 -> crop 16 at (2, 4).
    blocks = image.astype(np.float64).reshape(20, 16, 25, 16, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(views["student"].numpy()[0], blocks[2:18, 4:20], atol=1e-3)
    # teacher at 32: resize_small(40) = factor 8 -> 40x50 -> crop 32 at (4, 9).
    blocks = image.astype(np.float64).reshape(40, 8, 50, 8, 3).mean(axis=(1, 3))
    np.testing.assert_allclose(views["teacher"].numpy()[0], blocks[4:36, 9:41], atol=1e-3)


def test_run_plan_reports_the_authors_eval_for_every_run_kind():
    from kdzoo.train import FunMatchRun, SupervisedRun, plan
    fm = FunMatchRun(dataset="pets", teacher=None, student=None, workdir="/nonexistent",
                     epochs=1000)
    assert plan(fm)[1]["eval"] == "resize_small(160)|central_crop(128)"
    sup = SupervisedRun(dataset="imagenet2012", model=None, optimizer=None,
                        workdir="/nonexistent", mixup_alpha=0.2)
    info = plan(sup)[1]
    assert info["eval"] == "resize_small(256)|central_crop(224)"
    assert json.loads(json.dumps(info)) == info
