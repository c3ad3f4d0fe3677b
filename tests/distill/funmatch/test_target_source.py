"""Issue 26: a FunMatchDistiller owns one target source; ``fit`` guards its inputs once.

Tiny models, 20 px noise images, a handful of steps.
"""

import warnings

import keras
import numpy as np
import pytest

import kdzoo.distill as kd
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.distill.funmatch.targets import TargetSource
from kdzoo.train.checkpointing import StopOnNonFiniteLoss
from helpers import tiny_convnet as tiny


def noise(n=16, size=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def distiller(variant, **kw):
    d = FunMatchDistiller(tiny(), tiny(), variant=variant, image_size=16, seed=3,
                          ensemble_crops=2, **kw)
    d.compile(optimizer=keras.optimizers.SGD(0.01))
    return d


def test_the_distiller_keeps_its_targets_in_one_source_only():
    d = distiller("fix/rs")
    assert isinstance(d.target_source, TargetSource)
    assert d.target_source.mode == "fixed"
    # The state lives in the source, not as loose attributes of the distiller.
    for name in ("_teacher_fn", "_fixed_targets_temperature"):
        assert name not in vars(d)
    imgs = noise()
    d.fit(imgs, batch_size=8, verbose=0)
    assert d.fixed_targets is d.target_source.fixed_targets
    assert d.fixed_targets.shape == (16, 5)
    assert d.fixed_targets_source is imgs
    first = d.fixed_targets
    d.fit(imgs, batch_size=8, verbose=0)       # same images, same T: reused
    assert d.fixed_targets is first
    d.temperature = 4.0                         # another T: computed again
    d.fit(imgs, batch_size=8, verbose=0)
    assert d.fixed_targets is not first


def test_fixed_targets_follow_a_changed_temperature():
    """Recomputed targets are at the new T: those of a distiller built with it."""
    teacher, imgs = tiny(), noise()
    d = FunMatchDistiller(teacher, tiny(), variant="fix/rs", image_size=16)
    at_one = d.prepare_targets(imgs, batch_size=8)
    d.temperature = 4.0
    at_four = d.prepare_targets(imgs, batch_size=8)
    fresh = FunMatchDistiller(teacher, tiny(), variant="fix/rs", image_size=16,
                              temperature=4.0).prepare_targets(imgs, batch_size=8)
    np.testing.assert_allclose(at_four, fresh, rtol=1e-6, atol=1e-7)
    assert not np.allclose(at_four, at_one)
    # A higher temperature flattens every row towards uniform.
    assert np.all(at_four.max(axis=1) < at_one.max(axis=1))


def test_teacher_cache_is_set_only_through_use_teacher_cache(tmp_path):
    d = distiller("same/ic")
    assert d.target_source.mode == "online" and d.teacher_cache is None
    with pytest.raises(AttributeError):
        d.teacher_cache = "elsewhere.tcache"
    imgs = noise()
    cache = kd.cache_teacher(d, imgs, tmp_path / "c.tcache", epochs=1, batch_size=8)
    opened = d.use_teacher_cache(str(cache.path))
    assert d.teacher_cache is opened and d.target_source.mode == "cache"
    d.fit(imgs, batch_size=8, verbose=0)
    d.use_teacher_cache(None)
    assert d.teacher_cache is None and d.target_source.mode == "online"


def test_fit_guards_once_through_checked_inputs(monkeypatch):
    d = distiller("same/ic")
    imgs = noise()
    seen = {}

    def spy(self, x=None, y=None, *args, **kwargs):
        seen.update(kwargs, x=x, y=y)
        return None

    monkeypatch.setattr(keras.Model, "fit", spy)
    d.fit(imgs, batch_size=8, epochs=2, verbose=0, callbacks=[StopOnNonFiniteLoss()])
    assert sum(isinstance(c, StopOnNonFiniteLoss) for c in seen["callbacks"]) == 1
    assert seen["steps_per_epoch"] == 2 and seen["epochs"] == 2 and seen["y"] is None
    assert seen["shuffle"] is False and "batch_size" not in seen
    assert set(seen["x"].element_spec) == {"student"}
    d.fit(imgs, batch_size=8, verbose=0)
    assert isinstance(seen["callbacks"][0], StopOnNonFiniteLoss)
    d.fit(imgs, batch_size=8, verbose=0, stop_on_non_finite_loss=False)
    assert not any(isinstance(c, StopOnNonFiniteLoss) for c in seen["callbacks"])


def test_fit_errors_name_the_argument():
    d = distiller("same/ic")
    imgs = noise()
    with pytest.raises(ValueError, match=r"FunMatchDistiller.fit\(validation_data\): labels"):
        d.fit(imgs, batch_size=8, verbose=0, validation_data=(imgs, np.full(16, 37)))
    with pytest.raises(ValueError, match="validation_split is not supported"):
        d.fit(imgs, batch_size=8, verbose=0, validation_split=0.2)
    with pytest.raises(ValueError, match="fit needs training images"):
        d.fit(None, batch_size=8, verbose=0)
    endless = d.make_train_dataset(imgs, batch_size=8).repeat()
    d.train_steps_per_epoch = None
    with pytest.raises(ValueError, match="endless: pass steps_per_epoch"):
        d.fit(endless, verbose=0)


def test_the_labels_warning_points_at_the_callers_line():
    """Warnings are shown once per location: it must be the user's fit call, not kdzoo's."""
    d = distiller("same/ic")
    imgs = noise()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d.fit(imgs, np.zeros(16, np.int64), batch_size=8, verbose=0)
    [w] = [w for w in caught if "ignores labels" in str(w.message)]
    assert w.filename == __file__
