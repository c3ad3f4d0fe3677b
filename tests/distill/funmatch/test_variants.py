"""The teaching-variant table drives the views: every row's facts, checked on the views.

Parametrized over ``VARIANT_TABLE``, so a new row is tested by adding it.
"""

import numpy as np
import pytest
import tensorflow as tf

from kdzoo.distill import VARIANTS
from kdzoo.distill.funmatch.variants import VARIANT_TABLE, get_variant
from kdzoo.distill.funmatch.views import ViewMaker
from reference.views import views_and_boxes

ROWS = {row.name: row for row in VARIANT_TABLE}
H, W, SIZE = 40, 56, 16


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


def _views(name, n=12, **kwargs):
    vm = ViewMaker(name, SIZE, seed=3, inception_area_range=(0.2, 0.6), **kwargs)
    return vm, [views_and_boxes(vm, _image(i), i, 0) for i in range(n)]


def test_the_table_is_the_exported_variant_list():
    assert VARIANTS == tuple(ROWS)
    assert len(set(VARIANTS)) == len(VARIANTS)
    with pytest.raises(ValueError, match="Did you mean .*'same/ic'"):
        get_variant("same/ci")


@pytest.mark.parametrize("name", list(ROWS))
def test_student_crop_follows_the_row(name):
    row = ROWS[name]
    _, views = _views(name)
    for v in views:
        top, left, h, w = v["student_box"].numpy().tolist()
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W
        if row.student_crop == "rs":
            assert (top, left, h, w) == (0, 0, H, W)
        elif row.student_crop == "rc":  # a square of 0.875 x the short side
            assert h == w == round(0.875 * H)
        else:  # inception: 20-60 % of the area (+ rounding)
            assert 0.18 <= h * w / (H * W) <= 0.62
        assert v["student"].shape == (SIZE, SIZE, 3)
    flips = {bool(v["student_flip"]) for v in views}
    assert flips == ({False, True} if row.student_flip else {False})


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "fix/ic_ens"
                                  else n for n in ROWS])  # 1,000 crops: slow
def test_teacher_view_follows_the_row(name):
    row = ROWS[name]
    vm, views = _views(name)
    if row.teacher == "fixed":
        assert all("index" in v and "teacher" not in v for v in views)
        assert vm.target_views(_image(0), 0).shape[1:] == (SIZE, SIZE, 3)
        return
    same = [np.array_equal(v["student_box"], v["teacher_box"])
            and bool(v["student_flip"]) == bool(v["teacher_flip"]) for v in views]
    if row.teacher == "same":
        assert all(same)
        np.testing.assert_allclose(views[0]["teacher"], views[0]["student"], atol=1e-5)
    else:
        assert sum(same) <= 1  # independent draws: (almost) never the same box and flip


@pytest.mark.parametrize("name", list(ROWS))
def test_batch_mixup_follows_the_row(name):
    vm = ViewMaker(name, SIZE, seed=3)
    rng = np.random.default_rng(0)
    batch = {"student": tf.constant(rng.uniform(0, 255, (8, SIZE, SIZE, 3)), tf.float32)}
    out = vm.batch_views(batch, tf.constant(0, tf.int64), tf.constant(0, tf.int64))
    changed = float(tf.reduce_max(tf.abs(out["student"] - batch["student"])))
    assert (changed > 1.0) == ROWS[name].mixup
