"""The FunMatch train stream rendered per batch equals the per-image stream (issue 23).

Both streams come from the same distiller settings and seed; only
``batched_render`` differs. The per-image stream (crop_resize in a tf.data map)
is the reference: independent code from kdzoo.data.batched_crops.
"""

import numpy as np
import pytest
import tensorflow as tf

from kdzoo.distill.funmatch import FunMatchDistiller
from helpers import smooth_images, tiny_convnet as tiny

TOL = 1e-3  # on [0, 255] pixels


def _stream(variant, images, batched, steps=4, teacher_size=None, initial_step=None,
            **kwargs):
    size = 16
    d = FunMatchDistiller(tiny(teacher_size or size), tiny(size), variant=variant,
                          image_size=size, teacher_image_size=teacher_size, seed=11,
                          batched_render=batched, **kwargs)
    ds = d.make_train_dataset(images, batch_size=8, initial_step=initial_step)
    return d, [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(steps)]


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for key in x:
            assert x[key].shape == y[key].shape, key
            np.testing.assert_allclose(x[key], y[key], atol=TOL, rtol=0, err_msg=key)


@pytest.mark.parametrize("variant,teacher_size", [
    ("funmatch", None),      # inception crop + flip + shared mixup: the study's run
    ("same/ic", None),
    ("ind/ic", None),        # independent teacher box and flip
    ("funmatch", 24),        # the same box rendered at the teacher's size
])
def test_batched_stream_equals_per_image_stream(variant, teacher_size):
    images = smooth_images(20, 28)  # 2.5 batches per epoch: batches cross epochs
    old_d, old = _stream(variant, images, False, steps=6, teacher_size=teacher_size)
    new_d, new = _stream(variant, images, True, steps=6, teacher_size=teacher_size)
    assert not old_d.views.can_render_batched(images.shape[1:])  # batched_render=False
    assert new_d.views.can_render_batched(images.shape[1:])
    _assert_same_batches(old, new)
    assert ("teacher" in new[0]) == (teacher_size is not None or variant == "ind/ic")
    # the views vary from batch to batch (mixup, crops): a real comparison
    assert not np.allclose(new[0]["student"], new[1]["student"])


def test_resumed_batched_stream_equals_per_image_stream():
    images = smooth_images(20, 28)
    _, old = _stream("funmatch", images, False, steps=3, initial_step=5)
    _, new = _stream("funmatch", images, True, steps=3, initial_step=5)
    _, full = _stream("funmatch", images, True, steps=8)
    _assert_same_batches(old, new)
    _assert_same_batches(new, full[5:])


def test_fixed_variant_batched_student_views():
    images = smooth_images(16, 20)

    def stream(batched):  # one teacher's weights (seed): the same fixed targets
        d = FunMatchDistiller(tiny(16, seed=3), tiny(16), variant="fix/rs", image_size=16,
                              seed=2, batched_render=batched)
        assert d.views.can_render_batched(images.shape[1:]) == batched
        ds = d.make_train_dataset(images, batch_size=4)
        return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(5)]

    old, new = stream(False), stream(True)
    _assert_same_batches(old, new)
    assert sorted(new[0]) == ["student", "targets"]


def test_ineligible_streams_keep_the_per_image_path(monkeypatch):
    from kdzoo.distill.funmatch import views as views_module
    calls = []
    real = views_module.ViewMaker.train_views
    monkeypatch.setattr(views_module.ViewMaker, "train_views",
                        lambda self, *a: calls.append(1) or real(self, *a))
    # area resampling (rc crops) is not bilinear: per image
    d = FunMatchDistiller(tiny(16), tiny(16), variant="same/rc", image_size=16,
                          batched_render=True)
    assert not d.views.can_render_batched([28, 28, 3])
    d.make_train_dataset(smooth_images(8, 28), batch_size=4)
    assert calls, "same/rc must render per image"
    # ... unless antialiased bilinear, which the batched renderer reproduces too
    aa = FunMatchDistiller(tiny(16), tiny(16), variant="same/rc", image_size=16, antialias=True,
                           batched_render=True)
    assert aa.views.can_render_batched([28, 28, 3])
    # variable-size images: one batch of raw images cannot be stacked, so per image
    calls.clear()
    d = FunMatchDistiller(tiny(16), tiny(16), variant="funmatch", image_size=16,
                          batched_render=True)
    assert not d.views.can_render_batched([None, None, 3])
    rng = np.random.default_rng(0)
    pairs = [rng.integers(0, 256, (int(rng.integers(16, 30)), 20, 3), dtype=np.uint8)
             for _ in range(8)]
    ds = tf.data.Dataset.from_generator(lambda: iter(pairs), output_signature=tf.TensorSpec(
        [None, 20, 3], tf.uint8))
    batch = next(iter(d.make_train_dataset(ds, batch_size=4)))
    assert calls and batch["student"].shape == (4, 16, 16, 3)
    # static sizes, but batched_render=False (the default: runs stay bit-identical to
    # earlier kdzoo unless asked): per image
    calls.clear()
    assert FunMatchDistiller(tiny(16), tiny(16), image_size=16).get_config()[
        "batched_render"] is False
    off = FunMatchDistiller(tiny(16), tiny(16), variant="funmatch", image_size=16,
                            batched_render=False)
    off.make_train_dataset(smooth_images(8, 28), batch_size=4)
    assert calls and off.get_config()["batched_render"] is False
