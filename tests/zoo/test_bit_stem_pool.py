"""BiT's stem max-pool padding: zeros (big_transfer) or -inf (big_vision bit_paper).

The -inf form is built from a width-1 edge-repeating pad; these tests check it
against a max-pool written here in NumPy with -inf padding, and that zoo cards
and the recipes' students pick the form of the code that trained them.
"""

import json
import os

import keras
import numpy as np
import pytest

import kdzoo
from kdzoo.errors import ModelCardError
from kdzoo.models import bit
from kdzoo.zoo.plain_keras import to_plain_keras


def numpy_pool(x, pad_value):
    """3x3/2 max-pool over ``x`` (N, H, W, C) padded by one pixel of ``pad_value``."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
    out_h, out_w = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
    out = np.empty((x.shape[0], out_h, out_w, x.shape[3]), x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j] = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
    return out


def pool_model(padding, size):
    inputs = keras.Input((size, size, 3))
    return keras.Model(inputs, bit._stem_pool(inputs, padding))


@pytest.mark.parametrize("size", [8, 9, 112 // 8])
def test_each_padding_equals_a_numpy_max_pool_with_that_pad_value(size):
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype("float32")
    x[0] = -np.abs(x[0])  # all negative: zero padding wins every border window
    neg_inf = pool_model("neg_inf", size).predict(x, verbose=0)
    zeros = pool_model("zeros", size).predict(x, verbose=0)
    np.testing.assert_allclose(neg_inf, numpy_pool(x, -np.inf), rtol=0, atol=0)
    np.testing.assert_allclose(zeros, numpy_pool(x, 0.0), rtol=0, atol=0)
    # They differ exactly in the windows that hold a padded pixel: the first row and
    # column, and for an odd size the last ones too (the pad there is read as well).
    diff = (neg_inf[0] != zeros[0]).all(axis=-1)
    border = np.zeros_like(diff)
    border[0], border[:, 0] = True, True
    if size % 2:
        border[-1], border[:, -1] = True, True
    np.testing.assert_array_equal(diff, border)


def test_an_unknown_padding_is_refused_by_name():
    with pytest.raises(ValueError, match="stem_pool_padding must be one of"):
        bit.build_bit(50, 0.5, units=(1, 1, 1, 1), input_shape=(32, 32, 3),
                      stem_pool_padding="same")


def tiny(padding):
    return bit.tiny_bit(5, (32, 32, 3), name=None, stem_pool_padding=padding)


def test_neg_inf_bit_takes_zero_bit_weights_and_exports_to_plain_keras(tmp_path):
    zeros, neg_inf = tiny("zeros"), tiny("neg_inf")
    neg_inf.set_weights(zeros.get_weights())  # same layers, same weights: only the pad differs
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    plain = to_plain_keras(neg_inf)
    np.testing.assert_allclose(plain.predict(x, verbose=0), neg_inf.predict(x, verbose=0),
                               atol=1e-4)
    path = str(tmp_path / "plain.keras")
    plain.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), neg_inf.predict(x, verbose=0),
                               atol=1e-4)
    assert not np.allclose(zeros.predict(x, verbose=0), neg_inf.predict(x, verbose=0),
                           atol=1e-6)


def has_zero_pool_pad(model):
    return any(layer.name == "root_pool_pad" for layer in model.layers)


@pytest.mark.slow
def test_cards_follow_their_trainer_and_the_caller_may_override():
    cards_dir = os.path.join(os.path.dirname(kdzoo.zoo.registry.__file__), os.pardir, os.pardir, "pretrained")
    with open(os.path.join(cards_dir, "bit_r50x1.funmatch_in1k_224.json")) as f:
        assert json.load(f)["build_options"] == {"stem_pool_padding": "neg_inf"}
    assert not has_zero_pool_pad(kdzoo.load("resnet50_funmatch_imagenet", weights=None))
    assert has_zero_pool_pad(kdzoo.load("bit_r50x1.bit_m_in21k", weights=None))
    timm_like = kdzoo.load("resnet50_funmatch_imagenet", weights=None,
                           build_options={"stem_pool_padding": "zeros"})
    assert has_zero_pool_pad(timm_like)
    with pytest.raises(ValueError, match="build_options .* do not fit architecture"):
        kdzoo.load("cifar_resnet18", weights=None, build_options={"stem_pool_padding": "zeros"})


def test_a_card_whose_build_options_is_not_an_object_is_refused():
    with pytest.raises(ModelCardError, match="build_options must be a JSON object"):
        kdzoo.zoo.loader._build_options({"name": "x.y", "build_options": ["neg_inf"]}, None)
    with pytest.raises(TypeError, match="build_options must be a dict"):
        kdzoo.zoo.loader._build_options(None, "neg_inf")


@pytest.mark.slow
def test_recipe_students_are_built_as_big_vision_builds_them():
    from kdzoo.train.recipe import load_student
    student = load_student("bit_r50x1", None, num_classes=5, input_shape=(64, 64, 3))
    assert not has_zero_pool_pad(student)
    assert not np.any(student.get_layer("head").get_weights()[0])  # bit_paper's zero head
