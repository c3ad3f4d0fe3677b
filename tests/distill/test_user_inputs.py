"""What a Keras user passes by habit: labels to the label-free fit, [0, 1] images,
``(x, y)`` arrays for evaluation, and ``kdzoo.callbacks`` without a second import.

Each case failed (silently, or with an AttributeError / TypeError) on 302bc43.
"""

import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kdzoo.distill.self_distill.early_exit import EarlyExit
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.distill.self_distill import SelfDistillation
from kdzoo.zoo.registry import architectures
from helpers import tiny_convnet


def tiny(name=None):
    """This file's convnet: one linear conv, Keras' default initialisers."""
    return tiny_convnet(name=name, width=4, convs=1, relu=None,
                        kernel_initializer="glorot_uniform")


@pytest.fixture(scope="module")
def distiller():
    keras.utils.set_random_seed(0)
    d = FunMatchDistiller(tiny(name="t"), tiny(name="s"), variant="same/ic", image_size=16)
    d.compile(optimizer="sgd")
    return d


RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (8, 20, 20, 3), dtype=np.uint8)
LABELS = RNG.integers(0, 5, 8)


def test_kdzoo_callbacks_is_reachable_from_the_package():
    out = subprocess.run([sys.executable, "-c", "import kdzoo; "
                          "print(kdzoo.callbacks.StudentCheckpoint.__name__)"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    assert out.stdout.strip() == "StudentCheckpoint"


def test_make_eval_dataset_takes_a_tuple_of_arrays_like_keras_evaluate(distiller):
    from_arrays = distiller.evaluate(distiller.make_eval_dataset((IMAGES, LABELS)),
                                     return_dict=True, verbose=0)
    from_dataset = distiller.evaluate(distiller.make_eval_dataset(
        tf.data.Dataset.from_tensor_slices((IMAGES, LABELS))), return_dict=True, verbose=0)
    assert from_arrays == pytest.approx(from_dataset)
    with pytest.raises(ValueError, match="8 images but 3 labels"):
        distiller.make_eval_dataset((IMAGES, LABELS[:3]))
    with pytest.raises(TypeError, match="tuple"):
        distiller.make_eval_dataset(IMAGES)


def test_labels_given_to_the_label_free_fit_warn_and_name_the_alternatives(distiller):
    with pytest.warns(UserWarning, match=r"ignores labels.*'labels' or 'mixup'.*"
                                         r"keras\.distillation\.Distiller"):
        distiller.fit(tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)), batch_size=4,
                      epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="ignores labels"):
        distiller.fit(IMAGES, LABELS, batch_size=4, epochs=1, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # images alone: no warning
        distiller.fit(IMAGES, batch_size=4, epochs=1, verbose=0)


def test_unit_range_images_are_refused_by_evaluate_like_fit(distiller):
    unit = IMAGES.astype("float32") / 255.0
    with pytest.raises(ValueError, match=r"lie in \[0, 1\].*\[0, 255\]"):
        distiller.make_eval_dataset((unit, LABELS))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        distiller.evaluate(distiller.make_eval_dataset(
            tf.data.Dataset.from_tensor_slices((unit, LABELS))).map(
                lambda v, y: ({k: x / 255.0 for k, x in v.items()}, y)), verbose=0)
    # The same images in [0, 255] as float, and an all-black batch, are fine.
    distiller.make_eval_dataset((IMAGES.astype("float32"), LABELS))
    distiller.make_eval_dataset((np.zeros_like(unit), LABELS))


@pytest.fixture(scope="module")
def self_distilled():
    keras.utils.set_random_seed(0)
    backbone = architectures()["cifar_resnet18"].builder(
        num_classes=5, include_top=True, input_shape=(32, 32, 3), pooling=None, base_width=4)
    return SelfDistillation(backbone, num_classes=5)


def test_unit_range_images_are_refused_by_early_exit_and_self_distillation(self_distilled):
    unit = RNG.uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    fast = EarlyExit(self_distilled, thresholds=[0.9, 0.9, 0.9])
    with pytest.raises(ValueError, match=r"EarlyExit: the float images lie in \[0, 1\]"):
        fast.predict(unit)
    assert fast.predict(unit * 255.0)["logits"].shape == (4, 5)
    self_distilled.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"SelfDistillation.evaluate: the float images lie"):
        self_distilled.evaluate(unit, np.zeros(4, "int64"), verbose=0)


def test_unit_range_images_are_refused_by_kdzoo_evaluate_from_a_dataset_and_arrays():
    import kdzoo
    model = tiny(name="plain")
    unit = IMAGES.astype("float32") / 255.0
    for given in ((unit, LABELS), tf.data.Dataset.from_tensor_slices((unit, LABELS))):
        with pytest.raises(ValueError, match=r"kdzoo\.evaluate: the float images lie in "
                                             r"\[0, 1\].*\[0, 255\].*before dividing by 255"):
            kdzoo.evaluate(model, given, image_size=16)
    # The same pixels in [0, 255] as float pass, and give the same top-1 as uint8.
    as_float = kdzoo.evaluate(model, tf.data.Dataset.from_tensor_slices(
        (IMAGES.astype("float32"), LABELS)), image_size=16)
    assert as_float["top1"] == kdzoo.evaluate(model, (IMAGES, LABELS), image_size=16)["top1"]


def test_early_exit_evaluate_and_calibration_refuse_unit_range_images(self_distilled):
    from kdzoo.distill.self_distill.exit_calibration import calibrate_thresholds
    unit = RNG.uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    labels = np.zeros(4, "int64")
    with pytest.raises(ValueError, match=r"EarlyExit: the float images lie in \[0, 1\]"):
        EarlyExit(self_distilled, thresholds=[0.9, 0.9, 0.9]).evaluate(unit, labels)
    with pytest.raises(ValueError, match=r"calibrate_thresholds: the float images lie"):
        calibrate_thresholds(self_distilled, unit, labels, target_accuracy=0.5)
    assert calibrate_thresholds(self_distilled, unit * 255, labels, max_flops_fraction=1.0
                                )["thresholds"] is not None


def test_labels_warning_comes_once_per_fit_call_not_per_batch_or_epoch(distiller):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.fit(IMAGES, LABELS, batch_size=2, epochs=2, verbose=0)
    assert [str(w.message)[:40] for w in caught if "ignores labels" in str(w.message)] == [
        "FunMatchDistiller.fit ignores labels: fu"]
