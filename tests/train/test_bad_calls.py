"""Every bad input answered clearly: a table of wrong calls across the public API.

Each row is ``(id, call, exception type, regex)``. The regex checks that the
message names the bad value and says what to do (the valid choices, a
did-you-mean, the fix). ``call`` takes the module's shared objects (tiny
Fashion-MNIST CNNs, built once) so the whole table runs in seconds.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import kdzoo
from kdzoo import data
from kdzoo.train import distribute, grid, runner as train
from kdzoo.data import augment, fashion_mnist
from kdzoo.data.pipeline import DatasetNotFoundError
from kdzoo.distill.self_distill import early_exit, exit_calibration
from kdzoo.distill import losses
from kdzoo.optim import paper_adam as optim
from kdzoo.distill.funmatch import views

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
F = kdzoo.FunMatchDistiller
SD = kdzoo.SelfDistillation


class Env:
    """The shared objects every case may use (built once per module)."""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env()
    e.tmp = str(tmp_path_factory.mktemp("bad_calls"))
    e.empty = str(tmp_path_factory.mktemp("empty_data_dir"))
    e.student = kdzoo.load("fmnist_cnn_w16", weights=None)             # 28x28x1, 10 classes
    e.teacher = kdzoo.load("fmnist_cnn_w32", weights=None)
    e.student5 = kdzoo.load("fmnist_cnn_w16", weights=None, num_classes=5)
    e.teacher7 = kdzoo.load("fmnist_cnn_w32", weights=None, num_classes=7)
    e.teacher_rgb = kdzoo.load("fmnist_cnn_w32", weights=None, input_shape=(28, 28, 3))
    e.free_student = kdzoo.load("fmnist_cnn_w16", weights=None, input_shape=(None, None, 1))
    e.free_teacher = kdzoo.load("fmnist_cnn_w32", weights=None, input_shape=(None, None, 1))
    e.d = F(e.teacher, e.student, image_size=28)
    e.d.compile(optimizer="adam")
    e.sd = SD(kdzoo.load("fmnist_cnn_w16", weights=None), num_classes=10)   # 3 exits
    e.sd.compile(optimizer="sgd")
    e.images = np.zeros((4, 28, 28, 1), np.uint8)
    e.examples = tf.data.Dataset.from_tensor_slices((e.images, np.zeros(4, np.int32)))
    e.bad_ext = os.path.join(e.tmp, "weights.pt")
    e.fake_npz = os.path.join(e.tmp, "R50x1.npz")
    for path in (e.bad_ext, e.fake_npz):
        with open(path, "wb") as f:
            f.write(b"not a checkpoint")
    return e


def _free(e, **kwargs):
    """A distiller over models that take any image size (so only our checks fire)."""
    return F(e.free_teacher, e.free_student, **kwargs)


def _train(e, images, batch_size=2):
    return e.d.make_train_dataset(images, batch_size=batch_size)


CASES = [
    # ---- unknown names: did-you-mean + where the list is -----------------------------
    ("model_typo", lambda e: kdzoo.load("bit_r50x2", weights=None), ValueError,
     r"Unknown model name 'bit_r50x2'\. Did you mean 'bit_r50x3'.*kdzoo\.list_models\(\)"),
    ("alias_typo", lambda e: kdzoo.load("resnet50_funmach_imagenet"), ValueError,
     r"'resnet50_funmach_imagenet'\. Did you mean 'resnet50_funmatch_imagenet'"),
    ("model_info_typo", lambda e: kdzoo.model_info("fmnist_cnn_w64"), ValueError,
     r"Unknown model name 'fmnist_cnn_w64'\. Did you mean 'fmnist_cnn_w16'"),
    ("model_name_not_str", lambda e: kdzoo.load(50), TypeError,
     r"model name must be a string, got int"),
    ("list_models_pattern_not_str", lambda e: kdzoo.list_models(3), TypeError,
     r"pattern must be a glob string such as '\*funmatch\*'.*got 3"),
    ("dataset_typo", lambda e: data.get_spec("petz"), ValueError,
     r"Unknown dataset 'petz'\. Did you mean 'pets'\? Known datasets: .*flowers102"),
    ("dataset_cifar10", lambda e: data.load_split("cifar10", "train"), ValueError,
     r"Unknown dataset 'cifar10'\. Did you mean 'cifar100'"),
    ("split_role", lambda e: data.get_spec("pets").split("validation"), ValueError,
     r"role must be one of \('train', 'minival', 'test'\), got 'validation'\. "
     r"Did you mean 'minival'"),
    ("fmnist_split", lambda e: fashion_mnist.load("val"), ValueError,
     r"split must be 'train' or 'test', got 'val'"),
    ("tfds_builder_of_embedded", lambda e: data.tfds_builder("fashion_mnist"), ValueError,
     r"'fashion_mnist' does not come from TFDS.*kdzoo\.data\.load_split\('fashion_mnist'"),
    ("variant_typo", lambda e: F(e.teacher, e.student, variant="funmatc", image_size=28),
     ValueError, r"Unknown teaching variant 'funmatc'\. Did you mean 'funmatch'.*Choose one of"),
    ("viewmaker_variant", lambda e: views.ViewMaker("fix/rc", 28), ValueError,
     r"'fix/rc'\. Did you mean 'fix/rs'.*Choose one of fix/rs, fix/cc"),
    ("strategy_typo", lambda e: distribute.get_strategy("mirorred"), ValueError,
     r"Unknown strategy 'mirorred'\. Did you mean 'mirrored'.*Choose one of auto"),
    # ---- missing TFDS data: how to download / prepare --------------------------------
    ("tfds_not_prepared", lambda e: data.load_split("flowers102", "train", data_dir=e.empty),
     DatasetNotFoundError,
     r"'flowers102' \(oxford_flowers102\) was not found in data_dir=.*"
     r"tfds build oxford_flowers102 --data_dir"),
    ("tfds_manual_download", lambda e: data.load_split("imagenet2012", "test", e.empty),
     DatasetNotFoundError,
     r"cannot be downloaded automatically.*downloads/manual/ILSVRC2012_img_train\.tar.*"
     r"tfds build imagenet2012"),
    # ---- weights= -----------------------------------------------------------------------
    ("weights_missing_file",
     lambda e: kdzoo.load("fmnist_cnn_w16", weights=os.path.join(e.empty, "w.weights.h5")),
     FileNotFoundError, r"w\.weights\.h5 does not exist\. Pass weights='pretrained'.*None"),
    ("weights_pretrained_typo", lambda e: kdzoo.load("bit_r50x1", weights="pretraind"),
     FileNotFoundError, r"pretraind does not exist\. Did you mean weights='pretrained'\?"),
    ("weights_bad_extension", lambda e: kdzoo.load("fmnist_cnn_w16", weights=e.bad_ext),
     ValueError, r"Unsupported weight file .*weights\.pt: use a published BiT \.npz or a "
                 r"Keras \.weights\.h5"),
    ("weights_npz_for_non_bit", lambda e: kdzoo.load("fmnist_cnn_w16", weights=e.fake_npz),
     ValueError, r"'fmnist_cnn_w16' is not BiT\. Pass a Keras \.weights\.h5"),
    ("weights_not_a_path", lambda e: kdzoo.load("fmnist_cnn_w16", weights=3), TypeError,
     r"weights must be 'pretrained', None or a file path, got 3"),
    ("weights_of_bare_architecture", lambda e: kdzoo.load("bit_r50x1"), ValueError,
     r"'bit_r50x1' is an architecture without weights.*checkpoints \[.*"
     r"'bit_r50x1\.funmatch_in1k_224'.*weights=None"),
    # ---- class counts ---------------------------------------------------------------------
    ("num_classes_zero", lambda e: kdzoo.load("fmnist_cnn_w16", weights=None, num_classes=0),
     ValueError, r"num_classes must be a positive int, got 0"),
    ("num_classes_bool",
     lambda e: kdzoo.load("fmnist_cnn_w16", weights=None, num_classes=True), ValueError,
     r"num_classes must be a positive int, got True"),
    ("funmatch_class_mismatch", lambda e: F(e.teacher, e.student5, image_size=28), ValueError,
     r"predicts 10 classes but the student 'fmnist_cnn_w16' predicts 5.*one label space"),
    ("ensemble_class_mismatch", lambda e: F([e.teacher, e.teacher7], e.student, image_size=28),
     ValueError, r"predicts 7 classes but the student .* predicts 10"),
    ("selfdistill_class_mismatch", lambda e: SD(e.student, num_classes=5), ValueError,
     r"SelfDistillation\(num_classes=5\) but the backbone's classifier 'head' has 10 classes\. "
     r"Build the backbone with num_classes=5"),
    ("selfdistill_num_classes_zero", lambda e: SD(e.student, num_classes=0), ValueError,
     r"num_classes must be a positive int, got 0"),
    # ---- shapes, ranks, channels ---------------------------------------------------------
    ("input_shape_rank",
     lambda e: kdzoo.load("fmnist_cnn_w16", weights=None, input_shape=(28, 28)), ValueError,
     r"input_shape must be \(height, width, channels\) without the batch axis, got "
     r"\(28, 28\); e\.g\. input_shape=\(28, 28, 1\)"),
    ("input_shape_zero",
     lambda e: kdzoo.load("fmnist_cnn_w16", weights=None, input_shape=(0, 28, 1)), ValueError,
     r"input_shape must hold positive ints.*got \(0, 28, 1\)"),
    ("pooling_name",
     lambda e: kdzoo.load("fmnist_cnn_w16", weights=None, include_top=False, pooling="mean"),
     ValueError, r"pooling must be None, 'avg' or 'max', got 'mean'"),
    ("image_size_vs_model", lambda e: F(e.teacher, e.student, image_size=32), ValueError,
     r"takes 28x28 images but image_size=32; pass image_size=28"),
    ("teacher_image_size_vs_model",
     lambda e: F(e.teacher, e.student, image_size=28, teacher_image_size=64), ValueError,
     r"teacher 'fmnist_cnn_w32' takes 28x28 images but teacher_image_size=64; "
     r"pass teacher_image_size=28"),
    ("channels_teacher_vs_student", lambda e: F(e.teacher_rgb, e.student, image_size=28),
     ValueError, r"different channel counts \[1, 3\]; build both with the same input_shape"),
    ("train_images_without_channel_axis", lambda e: _train(e, np.zeros((4, 28, 28), np.uint8)),
     ValueError, r"rank 3 \[H, W, C\].*got shape \(28, 28\).*x\[\.\.\., None\]"),
    ("train_images_channels", lambda e: _train(e, np.zeros((4, 28, 28, 3), np.uint8)),
     ValueError, r"Train images have 3 channels; the models take 1"),
    ("train_images_too_small", lambda e: _train(e, np.zeros((4, 20, 20, 1), np.uint8)),
     ValueError, r"20x20, smaller than the crop size image_size=28\. Use larger images or a "
                 r"smaller image_size"),
    ("train_images_not_array", lambda e: _train(e, [1, 2, 3]), TypeError,
     r"tf\.data\.Dataset or an array \[N, H, W, C\]; got list"),
    ("eval_images_channels",
     lambda e: e.d.predict(np.zeros((2, 28, 28, 3), np.uint8), verbose=0), ValueError,
     r"Images have 3 channels; the models take 1"),
    ("eval_labels_shape",
     lambda e: e.d.evaluate(e.images, np.zeros((4, 3)), verbose=0), ValueError,
     r"Labels must be class ids of shape \[batch\] or one-hot of shape \[batch, 10\]; "
     r"got shape \(None, 3\)"),
    ("early_exit_image_size",
     lambda e: e.sd.early_exit([0.5, 0.5])(np.zeros((2, 32, 32, 1))), ValueError,
     r"Early exit takes images shaped \[batch, 28, 28, 1\]; got shape \(2, 32, 32, 1\)\. "
     r"Resize"),
    ("early_exit_unbatched",
     lambda e: e.sd.early_exit([0.5, 0.5])(np.zeros((28, 28, 1))), ValueError,
     r"got shape \(28, 28, 1\)\. Add the batch axis: images\[None\]"),
    ("selfdistill_labels_shape",
     lambda e: e.sd.evaluate(e.images, np.zeros((4, 3, 3)), verbose=0), ValueError,
     r"Labels must be class ids of shape \[batch\] or one-hot of shape \[batch, 10\]"),
    # ---- dtypes ----------------------------------------------------------------------------
    ("train_images_float", lambda e: _train(e, np.zeros((4, 28, 28, 1), np.float32)),
     ValueError, r"must be raw uint8 pixels; got dtype float32.*tf\.cast\(x, tf\.uint8\)"),
    ("train_images_strings", lambda e: _train(e, np.array(["a", "b"])), ValueError,
     r"must be raw uint8 pixels; got dtype string"),
    ("eval_images_strings",
     lambda e: e.d.evaluate(tf.fill([2, 28, 28, 1], "a"), verbose=0), ValueError,
     r"raw pixels \(uint8 or float in \[0, 255\]\); got dtype string"),
    ("early_exit_strings",
     lambda e: e.sd.early_exit([0.5, 0.5])(np.full((2, 28, 28, 1), "a")), TypeError,
     r"raw pixels \(uint8 or float in \[0, 255\]\) shaped \[batch, 28, 28, 1\]; "
     r"got dtype string"),
    ("temperature_string", lambda e: F(e.teacher, e.student, image_size=28, temperature="hot"),
     TypeError, r"temperature must be a number, got 'hot' \(str\)"),
    ("feature_weight_string", lambda e: SD(e.student, num_classes=10, feature_weight="x"),
     TypeError, r"feature_weight must be a number, got 'x'"),
    ("image_size_string", lambda e: F(e.teacher, e.student, image_size="big"), TypeError,
     r"image_size must be a whole number of pixels, got 'big'.*e\.g\. image_size=224"),
    ("split_batch_string", lambda e: distribute.split_batch("many", 1), TypeError,
     r"global batch size must be an int, got 'many' \(str\)"),
    # ---- sizes -------------------------------------------------------------------------------
    ("image_size_zero", lambda e: _free(e, image_size=0), ValueError,
     r"image_size must be a positive whole number of pixels, got 0\..*e\.g\. image_size=224"),
    ("teacher_image_size_negative", lambda e: _free(e, image_size=28, teacher_image_size=-3),
     ValueError, r"teacher_image_size must be a positive whole number of pixels, got -3"),
    ("image_size_fractional", lambda e: views.ViewMaker("funmatch", 28.5), ValueError,
     r"image_size must be a positive whole number of pixels, got 28\.5"),
    # ---- temperatures --------------------------------------------------------------------------
    ("funmatch_temperature_zero", lambda e: F(e.teacher, e.student, image_size=28, temperature=0),
     ValueError, r"temperature must be > 0\.0, got 0\.0\. T of the tempered softmax"),
    ("funmatch_temperature_nan",
     lambda e: F(e.teacher, e.student, image_size=28, temperature=float("nan")), ValueError,
     r"temperature must be > 0\.0, got nan"),
    ("selfdistill_temperature", lambda e: SD(e.student, num_classes=10, temperature=-1),
     ValueError, r"temperature must be > 0\.0, got -1\.0\. The paper uses 3\.0"),
    ("kl_temperature_zero",
     lambda e: losses.kl_divergence(tf.zeros([2, 3]), tf.zeros([2, 3]), temperature=0),
     ValueError, r"temperature must be > 0 \(T of the tempered softmax.*got 0"),
    # ---- augmentation parameters ------------------------------------------------------------------
    ("mixup_alpha_negative", lambda e: _free(e, image_size=28, mixup_alpha=-1), ValueError,
     r"mixup_alpha must be >= 0\.0, got -1\.0\. .*0 turns mixup off"),
    ("crop_fraction_above_one", lambda e: _free(e, image_size=28, crop_fraction=1.5), ValueError,
     r"crop_fraction must be in \(0, 1\], got 1\.5"),
    ("eval_crop_fraction_zero", lambda e: _free(e, image_size=28, eval_crop_fraction=0),
     ValueError, r"eval_crop_fraction must be in \(0, 1\], got 0"),
    ("area_range_reversed",
     lambda e: _free(e, image_size=28, inception_area_range=(0.5, 0.1)), ValueError,
     r"low <= high, got \(0\.5, 0\.1\); did you mean \(0\.1, 0\.5\)"),
    ("area_range_above_one", lambda e: _free(e, image_size=28, inception_area_range=(0.1, 2)),
     ValueError, r"inception_area_range\[1\] must be > 0\.0 and <= 1\.0, got 2\.0"),
    ("area_range_scalar", lambda e: _free(e, image_size=28, inception_area_range=0.5),
     TypeError, r"inception_area_range must be a pair \(low, high\), got 0\.5.*\(0\.05, 1\.0\)"),
    ("ensemble_crops_zero", lambda e: _free(e, image_size=28, ensemble_crops=0), ValueError,
     r"ensemble_crops must be >= 1, got 0"),
    ("shuffle_buffer_negative", lambda e: _free(e, image_size=28, shuffle_buffer=-5),
     ValueError, r"shuffle_buffer must be >= 0, got -5\.0\..*0 turns shuffling off"),
    ("labeled_stream_crop",
     lambda e: train.labeled_stream(e.examples, num_classes=10, image_size=28, batch_size=2,
                                    seed=0, crop="center"), ValueError,
     r"crop must be one of \('pad', 'random', 'inception', None\), got 'center'"),
    ("image_smaller_than_crop", lambda e: augment.check_min_size(tf.zeros([10, 10, 3]), 20),
     ValueError, r"at least 20x20 pixels\. Resize your images first or lower image_size\. "
                 r"Got 10x10"),
    # ---- early exit -----------------------------------------------------------------------------
    ("threshold_above_one", lambda e: e.sd.early_exit([0.5, 1.5]), ValueError,
     r"Thresholds must lie in \[0, 1\]; got \[1\.5\]"),
    ("threshold_count", lambda e: e.sd.early_exit([0.5]), ValueError,
     r"Expected 2 thresholds \(one per shallow exit.*for 3 exits, got 1"),
    ("threshold_strings", lambda e: e.sd.early_exit(["a", "b"]), ValueError,
     r"thresholds must be numbers, got \['a', 'b'\]"),
    ("simulate_threshold_negative",
     lambda e: exit_calibration.simulate([np.zeros((2, 10))] * 3, [-0.1, 0.5]), ValueError,
     r"Thresholds must lie in \[0, 1\]; got \[-0\.1\]"),
    ("calibrate_target_accuracy",
     lambda e: exit_calibration.calibrate_thresholds(e.sd, e.images, [0, 1, 2, 3],
                                                     target_accuracy=2), ValueError,
     r"target_accuracy must lie in \[0, 1\], got 2"),
    ("calibrate_no_goal",
     lambda e: exit_calibration.calibrate_thresholds(e.sd, e.images, [0] * 4), ValueError,
     r"Give exactly one of target_accuracy, max_loss, max_flops or max_flops_fraction"),
    ("calibrate_confidence_alone",
     lambda e: exit_calibration.calibrate_thresholds(e.sd, e.images, [0] * 4,
                                                     target_accuracy=0.5, confidence=0.9),
     ValueError, r"confidence \(got 0\.9\) goes with max_loss"),
    ("export_exit_index", lambda e: e.sd.export_exit(4), ValueError,
     r"Exit index must be an int in \[1, 3\] \(1-based\), got 4"),
    # ---- SelfDistillation arguments ---------------------------------------------------------------
    ("exits_one", lambda e: SD(e.student, num_classes=10, exits=["stage3"]), ValueError,
     r"needs at least two exits, got \['stage3'\]"),
    ("exits_none_given", lambda e: SD(e.student, num_classes=10, exits=[]), ValueError,
     r"needs at least two exits, got \[\]"),
    ("exits_string", lambda e: SD(e.student, num_classes=10, exits="stage1"), TypeError,
     r"exits must be a list of layer names, not one string"),
    ("exits_typo", lambda e: SD(e.student, num_classes=10, exits=["stage1", "stag3"]),
     ValueError, r"Exit layer 'stag3' is not in backbone 'fmnist_cnn_w16'\. "
                 r"Did you mean 'stage3'"),
    ("exits_order", lambda e: SD(e.student, num_classes=10, exits=["stage3", "stage1"]),
     ValueError, r"shallow to deep; got \['stage3', 'stage1'\]"),
    ("backbone_without_stages",
     lambda e: SD(tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)]),
                  num_classes=3), ValueError,
     r"no stage-output layers \(stage1, stage2, \.\.\.\); pass exits=\["),
    ("backbone_not_a_model", lambda e: SD("fmnist_cnn_w16", num_classes=10), TypeError,
     r"backbone must be a functional keras\.Model.*kdzoo\.load"),
    ("alpha_above_one", lambda e: SD(e.student, num_classes=10, alpha=1.5), ValueError,
     r"alpha must be >= 0\.0 and <= 1\.0, got 1\.5\. It weighs KL"),
    ("feature_weight_negative", lambda e: SD(e.student, num_classes=10, feature_weight=-1),
     ValueError, r"feature_weight must be >= 0\.0, got -1\.0\. 0 turns the feature hint off"),
    ("selfdistill_mode", lambda e: SD(e.student, num_classes=10, mode="self_distill"),
     ValueError, r"mode must be one of \('self_distillation', 'deep_supervision'\), "
                 r"got 'self_distill'"),
    ("bottleneck_ratio_zero", lambda e: SD(e.student, num_classes=10, bottleneck_ratio=0),
     ValueError, r"bottleneck_ratio must be a positive int .*default 4\), got 0"),
    ("selfdistill_fit_without_labels", lambda e: e.sd.fit(e.images, epochs=1, verbose=0),
     ValueError, r"SelfDistillation\.fit needs labels: give batches of \(images, labels\)"),
    # ---- grids ---------------------------------------------------------------------------------
    ("grid_index_too_large", lambda e: grid.grid_point(grid.FUNMATCH_GRID, 80), IndexError,
     r"grid_index must be an int in \[0, 79\] for this 80-point grid; got 80"),
    ("grid_index_negative", lambda e: grid.grid_point(grid.FUNMATCH_GRID, -1), IndexError,
     r"grid_index must be an int in \[0, 79\].*got -1"),
    ("grid_entry_empty", lambda e: grid.expand_grid({"lr": []}), ValueError,
     r"Grid entry 'lr' must be a non-empty list of values"),
    # ---- batch sizes -----------------------------------------------------------------------------
    ("batch_not_divisible", lambda e: distribute.split_batch(10, 4), ValueError,
     r"Global batch size 10 is not divisible by the 4 replicas in sync; use a multiple of 4 "
     r"\(e\.g\. 8 or 12\)"),
    ("batch_zero_split", lambda e: distribute.split_batch(0, 1), ValueError,
     r"global batch \(0\) and replicas \(1\) must be positive"),
    ("train_batch_zero", lambda e: _train(e, e.images, batch_size=0), ValueError,
     r"batch_size must be >= 1, got 0"),
    ("train_batch_larger_than_data", lambda e: _train(e, e.images, batch_size=8), ValueError,
     r"4 images, fewer than one batch of 8; use batch_size <= 4"),
    ("eval_dataset_batch_zero",
     lambda e: data.make_eval_dataset("fashion_mnist", batch_size=0), ValueError,
     r"batch_size must be a positive int .*got 0"),
    ("distiller_eval_batch_zero", lambda e: e.d.make_eval_dataset(e.examples, batch_size=0),
     ValueError, r"batch_size must be >= 1, got 0"),
    ("distiller_eval_not_dataset", lambda e: e.d.make_eval_dataset(e.images), TypeError,
     r"got ndarray\. Pass \(images, labels\)"),
    ("labeled_stream_batch_zero",
     lambda e: train.labeled_stream(e.examples, num_classes=10, image_size=28, batch_size=0,
                                    seed=0), ValueError, r"batch_size must be a positive int, got 0"),
    # ---- misc ------------------------------------------------------------------------------------
    ("compile_with_loss", lambda e: e.d.compile(optimizer="adam", loss="mse"), ValueError,
     r"has its own loss \(KL at temperature T\); do not pass loss="),
    ("prepare_targets_not_fixed", lambda e: e.d.prepare_targets(e.images), ValueError,
     r"Variant 'funmatch' has no fixed targets; only fix/rs, fix/cc and fix/ic_ens"),
    ("warmup_not_below_total", lambda e: optim.paper_schedule(1e-3, 100, warmup_steps=100),
     ValueError, r"warmup_steps must be in \[0, total_steps\), got 100 with total_steps=100"),
    ("teacher_cache_missing",
     lambda e: e.d.use_teacher_cache(os.path.join(e.empty, "pets.tcache")), FileNotFoundError,
     r"No teacher cache at .*pets\.tcache; build one with kdzoo\.distill\.cache_teacher"),
]


# Issue 15, case 6: bad labels and data, and models that already output probabilities.
def _float_images(n=4, nan_at=None):
    x = np.random.default_rng(0).uniform(0, 255, (n, 28, 28, 1)).astype("float32")
    if nan_at is not None:
        x[nan_at, 3, 4, 0] = np.nan
    return x


def _labelled(images, labels, batch=2):
    return tf.data.Dataset.from_tensor_slices((images, np.asarray(labels))).batch(batch)


def _softmax_head():
    import keras
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x), name="probs")


def _with_softmax_layer(model):
    import keras
    return keras.Model(model.input, keras.layers.Softmax()(model.output), name="then_softmax")


LABELS = r"labels must be integer class ids in \[0, 10\)"
CASES += [
    ("fm_evaluate_label_37", lambda e: e.d.evaluate(_float_images(), np.array([1, 37, 2, 3]),
                                                    verbose=0),
     ValueError, LABELS + r".*labels\[1\] is 37"),
    ("fm_evaluate_label_negative", lambda e: e.d.evaluate(
        _float_images(), np.array([-5, 1, 2, 3]), verbose=0), ValueError,
     LABELS + r".*labels\[0\] is -5"),
    ("fm_evaluate_label_fraction", lambda e: e.d.evaluate(
        _float_images(), np.array([2.7, 1, 2, 3]), verbose=0), ValueError,
     LABELS + r".*labels\[0\] is 2.7"),
    ("fm_evaluate_dataset_label_37", lambda e: e.d.evaluate(
        _labelled(_float_images(), [1, 2, 3, 37]), verbose=0), ValueError,
     r"FunMatchDistiller.evaluate: " + LABELS),
    ("fm_evaluate_dataset_label_fraction", lambda e: e.d.evaluate(
        _labelled(_float_images(), [1.0, 2.5, 3.0, 4.0]), verbose=0), ValueError,
     LABELS + r".*not a whole number"),
    ("fm_evaluate_nan_pixel", lambda e: e.d.evaluate(
        _labelled(_float_images(nan_at=3), [1, 2, 3, 4]), verbose=0),
     kdzoo.errors.NonFiniteInputError, r"FunMatchDistiller.evaluate: the images hold NaN"),
    ("sd_fit_nan_pixel", lambda e: e.sd.fit(_float_images(nan_at=2), np.arange(4), verbose=0),
     kdzoo.errors.NonFiniteInputError, r"SelfDistillation.fit: the images hold NaN or Inf "
     r"\(first at index \(2, 3, 4, 0\)\)"),
    ("sd_fit_dataset_nan_pixel", lambda e: e.sd.fit(
        _labelled(_float_images(nan_at=1), [1, 2, 3, 4]), verbose=0),
     kdzoo.errors.NonFiniteInputError, r"SelfDistillation.fit: the images hold NaN"),
    ("sd_fit_dataset_label_37", lambda e: e.sd.fit(
        _labelled(_float_images(), [1, 2, 37, 4]), verbose=0), ValueError,
     r"SelfDistillation.fit: " + LABELS),
    ("sd_evaluate_label_37", lambda e: e.sd.evaluate(_float_images(), np.array([0, 1, 2, 37]),
                                                     verbose=0), ValueError,
     r"SelfDistillation.evaluate: " + LABELS + r".*labels\[3\] is 37"),
    ("fm_teacher_softmax_dense", lambda e: F(_softmax_head(), e.student, image_size=28),
     ValueError, r"teacher 'probs' ends in softmax .*needs logits.*classifier_activation=None"),
    ("fm_teacher_softmax_layer", lambda e: F(_with_softmax_layer(e.teacher), e.student,
                                             image_size=28),
     ValueError, r"teacher 'then_softmax' ends in Softmax"),
    ("fm_student_softmax", lambda e: F(e.teacher, _with_softmax_layer(e.student), image_size=28),
     ValueError, r"student 'then_softmax' ends in Softmax"),
]


def test_good_labels_and_images_still_evaluate(env):
    """The controls of the rows above: the same calls with valid labels work."""
    ids = np.array([1, 9, 0, 3])
    env.d.evaluate(_float_images(), ids, verbose=0)
    env.d.evaluate(_labelled(_float_images(), ids), verbose=0)
    env.d.evaluate(_float_images(), np.eye(10, dtype="float32")[ids], verbose=0)  # one-hot
    env.sd.evaluate(_labelled(_float_images(), ids.astype("float32")), verbose=0)


@pytest.mark.slow
def test_non_finite_loss_stops_user_fit_naming_the_step_and_keeps_good_weights(tmp_path):
    import keras

    from kdzoo.train.checkpointing import NonFiniteLossError
    keras.utils.set_random_seed(0)
    sd = SD(kdzoo.load("fmnist_cnn_w16", weights=None), num_classes=10)
    sd.compile(optimizer=keras.optimizers.SGD(1e30))  # diverges within a few steps
    images, labels = _float_images(16), np.arange(16) % 10
    saved = str(tmp_path / "ckpt.weights.h5")
    every_step = keras.callbacks.ModelCheckpoint(saved, save_weights_only=True, save_freq=1)
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch \d+, step \d+"):
        sd.fit(images, labels, batch_size=2, epochs=3, callbacks=[every_step], verbose=0)
    assert os.path.exists(saved)
    check = SD(kdzoo.load("fmnist_cnn_w16", weights=None), num_classes=10)
    check.load_weights(saved)
    assert all(np.isfinite(w).all() for w in check.get_weights())  # never overwritten by NaN
    # The documented switch turns the stop off: fit then runs to the end.
    sd2 = SD(kdzoo.load("fmnist_cnn_w16", weights=None), num_classes=10)
    sd2.compile(optimizer=keras.optimizers.SGD(1e30))
    history = sd2.fit(images, labels, batch_size=2, epochs=1, verbose=0,
                      stop_on_non_finite_loss=False)
    assert not np.isfinite(history.history["loss"][-1])


@pytest.mark.parametrize("call, error, pattern", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_call_is_answered_clearly(env, call, error, pattern):
    with pytest.raises(error) as info:
        call(env)
    assert not isinstance(info.value, tf.errors.OpError), "a raw TensorFlow error"
    assert re.search(pattern, str(info.value), re.S), str(info.value)


def test_table_is_large_and_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 35


@pytest.mark.slow
def test_bad_recipe_flags_are_all_reported_before_any_work(tmp_path):
    """Three bad flags, one subprocess: each named with its valid range, nothing run."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", "pets.py"), "--grid_index=80",
         "--batch_size=0", "--epochs=-1", "--workdir", str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    err = proc.stderr
    assert re.search(r"--grid_index=80: --grid_index must be in \[0, 79\]", err), err[-2000:]
    assert re.search(r"--batch_size=0: --batch_size must be a positive integer", err), err[-2000:]
    assert re.search(r"--epochs=-1: --epochs must be a positive integer", err), err[-2000:]
    assert not (tmp_path / "run").exists()
