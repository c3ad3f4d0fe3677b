"""Teacher-cache fingerprints (issue 15, case 4): the teacher's architecture config
(preprocessing included) and the images, for arrays and tf.data datasets alike."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kdzoo
from kdzoo.distill import cache_teacher
from kdzoo.distill.funmatch.fingerprint import weights_fingerprint
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.errors import CheckpointError

IMAGES = np.random.default_rng(1).integers(0, 256, (64, 28, 28, 1)).astype("uint8")
OTHER = np.random.default_rng(2).integers(0, 256, (64, 28, 28, 1)).astype("uint8")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    keras.utils.set_random_seed(0)
    teacher = kdzoo.load("fmnist_cnn_w16", weights=None)
    student = kdzoo.load("fmnist_cnn_w16", weights=None)
    path = str(tmp_path_factory.mktemp("fp") / "t.tcache")
    d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=28, seed=0)
    cache_teacher(d, tf.data.Dataset.from_tensor_slices(IMAGES), path, epochs=1,
                  batch_size=32, top_k=3)
    return teacher, student, path


def _distiller(teacher, student, path):
    d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=28, seed=0)
    d.use_teacher_cache(path)
    return d


def test_same_weights_behind_another_preprocess_scale_are_refused(built):
    teacher, student, path = built
    config = teacher.get_config()
    for layer in config["layers"]:
        if layer["config"]["name"] == "preprocess":
            layer["config"]["scale"] = 1 / 127.5
    other = keras.Model.from_config(config)
    other.set_weights(teacher.get_weights())
    assert weights_fingerprint(other) == weights_fingerprint(teacher)
    x = IMAGES[:4].astype("float32")
    assert np.abs(other(x) - teacher(x)).max() > 1e-3  # its outputs really differ
    with pytest.raises(CheckpointError, match=r"t\.tcache.*architecture or preprocessing"):
        _distiller(other, student, path)


def test_the_same_teacher_built_again_is_accepted(built):
    teacher, student, path = built
    again = kdzoo.load("fmnist_cnn_w16", weights=None)  # its layers get other auto names
    again.set_weights(teacher.get_weights())
    _distiller(again, student, path).make_train_dataset(IMAGES, batch_size=32)


@pytest.mark.parametrize("form", ["array", "dataset", "labelled_dataset", "batched_dataset"])
def test_the_cached_images_are_accepted_in_any_form(built, form):
    d = _distiller(*built)
    images = {"array": IMAGES, "dataset": tf.data.Dataset.from_tensor_slices(IMAGES),
              "labelled_dataset": tf.data.Dataset.from_tensor_slices((IMAGES, np.arange(64))),
              "batched_dataset": tf.data.Dataset.from_tensor_slices(IMAGES).batch(16)}[form]
    d.make_train_dataset(images, batch_size=32, num_images=64)


@pytest.mark.parametrize("form", ["array", "dataset"])
def test_other_images_of_the_same_count_are_refused(built, form):
    d = _distiller(*built)
    images = OTHER if form == "array" else tf.data.Dataset.from_tensor_slices((OTHER, OTHER[:, 0, 0, 0]))
    with pytest.raises(CheckpointError, match=r"t\.tcache was built on other train images"):
        d.make_train_dataset(images, batch_size=32)


def test_images_of_another_spec_are_refused(built):
    d = _distiller(*built)
    bigger = tf.data.Dataset.from_tensor_slices(np.zeros((64, 32, 32, 1), "uint8"))
    with pytest.raises(CheckpointError, match="element_spec 'uint8\\[28, 28, 1\\]' there"):
        d.make_train_dataset(bigger, batch_size=32)
