"""keras-hub models as kdzoo models: ``kdzoo.from_keras_hub`` and ``kdzoo.load("hub:...")``.

Offline: every hub model is built from its config (tiny ResNet / MobileNet
backbones), or saved by the test with ``save_to_preset`` into a temporary folder
and loaded back through keras-hub's own preset loader. Expected values come
from keras-hub itself (its preprocessor called by hand, its classifier called on
what that preprocessor returns).
Run: python -m pytest tests/zoo/test_keras_hub.py -x -q
"""

import keras
import keras_hub
import numpy as np
import pytest

import kdzoo
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.distill.self_distill import SelfDistillation

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def hub_resnet(classes=4, size=24, seed=0, preprocessor=True, block_type="basic_block",
               blocks=(1, 1, 1)):
    """A tiny ResNet ImageClassifier with an ImageNet-style converter (resize, mean/std)."""
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16, 16], stackwise_num_blocks=list(blocks),
        stackwise_num_strides=[1, 2, 2], block_type=block_type, use_pre_activation=False)
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(size, size), scale=[1 / (255 * s) for s in STD],
        offset=[-m / s for m, s in zip(MEAN, STD)])
    pre = keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter)
    return keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=classes, preprocessor=pre if preprocessor else None)


def hub_mobilenet(classes=4, size=32):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.MobileNetBackbone(
        stackwise_expansion=[[16], [24]], stackwise_num_blocks=[1, 1],
        stackwise_num_filters=[[8], [16]], stackwise_kernel_size=[[3], [3]],
        stackwise_num_strides=[[2], [2]], stackwise_se_ratio=[[None], [None]],
        stackwise_activation=[["relu"], ["hard_swish"]], output_num_filters=32,
        input_activation="hard_swish", output_activation="hard_swish", input_num_filters=8,
        stackwise_padding=[[1], [1]], image_shape=(None, None, 3), depthwise_filters=8,
        depthwise_stride=2, depthwise_residual=False, last_layer_filter=32)
    converter = keras_hub.layers.MobileNetImageConverter(image_size=(size, size),
                                                         scale=1 / 127.5, offset=-1.0)
    pre = keras_hub.models.MobileNetImageClassifierPreprocessor(image_converter=converter)
    return keras_hub.models.MobileNetImageClassifier(backbone=backbone, num_classes=classes,
                                                     num_features=16, preprocessor=pre)


def pixels(n=3, h=40, w=30, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, h, w, 3)).astype("float32")


def run(model, x):
    """``model`` on ``x`` in inference mode, eagerly (no predict-loop tracing)."""
    return keras.ops.convert_to_numpy(model(x, training=False))


def by_hand(hub_model, x):
    """What keras-hub's own pipeline computes: its preprocessor, then ``__call__``."""
    return keras.ops.convert_to_numpy(hub_model(hub_model.preprocessor(x), training=False))


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A classifier preset folder written by keras-hub's save_to_preset, and its source."""
    folder = str(tmp_path_factory.mktemp("hub") / "tiny_resnet")
    model = hub_resnet()
    model.save_to_preset(folder)
    return folder, model


# ---------------------------------------------------------- preprocessing ---
def test_in_graph_preprocessing_equals_the_presets_preprocessor():
    hub = hub_resnet()
    x = pixels()  # 40x30: the converter resizes (crop to aspect ratio) to 24x24
    model = kdzoo.from_keras_hub(hub)
    pre = keras.Model(model.input, model.get_layer("preprocess").output)
    want = keras.ops.convert_to_numpy(hub.preprocessor(x))
    assert want.shape == (3, 24, 24, 3) and want.min() < -1.5  # mean/std range, not [0, 255]
    np.testing.assert_allclose(run(pre, x), want, atol=1e-4)
    np.testing.assert_allclose(run(model, x), by_hand(hub, x),
                               rtol=1e-4, atol=1e-4)
    # The trap from_keras_hub removes: the hub model called on raw pixels differs.
    raw = keras.ops.convert_to_numpy(hub(keras.ops.image.resize(x, (24, 24)), training=False))
    assert np.abs(raw - by_hand(hub, x)).max() > 1e-2


@pytest.mark.parametrize("block_type", ["basic_block", "bottleneck_block"])
def test_called_plainly_it_is_in_inference_mode_like_the_hub_pipeline(block_type):
    # ResNet-50 v1's layout (resnet_50_imagenet): no pre-activation, per-channel mean/std.
    hub = hub_resnet(block_type=block_type, blocks=(2, 1, 1), size=32)
    x = pixels(n=4, h=48, w=40, seed=3)
    want = by_hand(hub, x)
    model = kdzoo.from_keras_hub(hub)
    bn = model.get_layer("conv1_bn")
    stats = [keras.ops.convert_to_numpy(v) for v in (bn.moving_mean, bn.moving_variance)]
    # model(x) is how the README and distillers' users call a zoo model: no flag.
    for got in (model(x), model(x, training=False), model.predict(x, verbose=0)):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want,
                                   rtol=1e-4, atol=1e-4 * np.abs(want).max())
    for old, new in zip(stats, (bn.moving_mean, bn.moving_variance)):  # no BN update
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(new), old)
    # training=True still reaches the BatchNormalizations: batch statistics, as the hub's.
    train = keras.ops.convert_to_numpy(model(x, training=True))
    hub_train = keras.ops.convert_to_numpy(hub(hub.preprocessor(x), training=True))
    assert np.abs(train - want).max() > 1e-3
    np.testing.assert_allclose(train, hub_train, rtol=1e-4, atol=1e-4 * np.abs(hub_train).max())


def test_mobilenet_classifier_and_a_scalar_value_range():
    hub = hub_mobilenet()
    x = pixels(h=32, w=32)
    model = kdzoo.from_keras_hub(hub)
    np.testing.assert_allclose(run(model, x), by_hand(hub, x),
                               rtol=1e-4, atol=1e-4)
    assert model.output_shape == (None, 4) and model.get_layer("head").units == 4
    # keras-hub's own MobileNet layer classes have no stock-Keras form: refused by name.
    with pytest.raises(ValueError, match="keras_hub.*not a stock Keras layer"):
        kdzoo.to_plain_keras(model)


def test_num_classes_replaces_the_head_with_a_zero_one():
    hub = hub_resnet(classes=4)
    model = kdzoo.from_keras_hub(hub, num_classes=7)
    assert model.output_shape == (None, 7)
    np.testing.assert_array_equal(run(model, pixels()), 0.0)
    # Copies: changing the result's weights leaves the hub model as it was.
    hub_kernel = hub.backbone.get_layer("conv1_conv").kernel
    before = hub_kernel.numpy()
    kernel = model.get_layer("conv1_conv").kernel
    kernel.assign(kernel + 1.0)
    np.testing.assert_array_equal(hub_kernel.numpy(), before)
    same = kdzoo.from_keras_hub(hub, num_classes=4)  # the preset's own count: kept
    np.testing.assert_allclose(run(same, pixels()), by_hand(hub, pixels()),
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------ preset path ---
@pytest.mark.slow
def test_preset_folder_through_the_real_loader(preset):
    folder, source = preset
    x = pixels(seed=1)
    want = by_hand(source, x)
    for model in (kdzoo.from_keras_hub(folder), kdzoo.load("hub:" + folder)):
        np.testing.assert_allclose(run(model, x), want, rtol=1e-4, atol=1e-4)
    fresh = kdzoo.load("hub:" + folder, weights=None)  # its architecture, random weights
    assert fresh.count_params() == source.count_params()
    assert np.abs(run(fresh, x) - want).max() > 1e-3
    features = kdzoo.load("hub:" + folder, include_top=False, pooling="avg")
    assert features.output_shape == (None, 16)


def test_backbone_only_preset_needs_num_classes(tmp_path):
    hub = hub_resnet()
    folder = str(tmp_path / "backbone")
    hub.backbone.save_to_preset(folder)
    hub.preprocessor.save_to_preset(folder)  # its image converter, no task.json
    with pytest.raises(ValueError, match="backbone without a classifier head.*num_classes"):
        kdzoo.from_keras_hub(folder)
    model = kdzoo.from_keras_hub(folder, num_classes=3)
    assert model.output_shape == (None, 3)
    x = pixels()
    want = keras.ops.convert_to_numpy(hub.backbone(hub.preprocessor(x)))  # same weights
    features = keras.Model(model.input, model.get_layer("stage3").output)
    np.testing.assert_allclose(run(features, x), want, rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------- bad input ---
def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="preset_or_model='resnet_50_imagent'.*"
                                         "Did you mean 'resnet_50_imagenet'"):
        kdzoo.from_keras_hub("resnet_50_imagent")
    with pytest.raises(ValueError, match="no_such_folder.*save_to_preset"):
        kdzoo.load("hub:" + str(tmp_path / "no_such_folder"))
    with pytest.raises(ValueError, match="no image preprocessing.*preprocessor="):
        kdzoo.from_keras_hub(hub_resnet(preprocessor=False))
    with pytest.raises(TypeError, match="bare ResNetBackbone.*num_classes"):
        kdzoo.from_keras_hub(hub_resnet().backbone)
    with pytest.raises(TypeError, match="preset_or_model must be.*not an image classifier"):
        kdzoo.from_keras_hub(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        kdzoo.from_keras_hub(hub_resnet(), num_classes=0)
    with pytest.raises(ValueError, match="weights='pretrained' or None"):
        kdzoo.load("hub:" + str(tmp_path), weights="x.weights.h5")


def test_a_text_preset_is_refused_by_name(tmp_path):
    folder = str(tmp_path / "bert")
    keras_hub.models.BertBackbone(vocabulary_size=16, num_layers=1, num_heads=1,
                                  hidden_dim=4, intermediate_dim=4,
                                  max_sequence_length=8).save_to_preset(folder)
    with pytest.raises(ValueError, match="is not an image model.*BertBackbone"):
        kdzoo.from_keras_hub(folder)


# ------------------------------------------------------- kdzoo integration ---
def test_self_distillation_backbone_and_exit_names():
    model = kdzoo.from_keras_hub(hub_resnet(), input_shape=(24, 24, 3))
    sd = SelfDistillation(model, num_classes=4, bottleneck_ratio=2)  # stage1..stage3
    assert sd.exit_names == ["stage1", "stage2", "stage3"]
    logits = sd(pixels(h=24, w=24))
    assert len(logits) == 3 and all(tuple(z.shape) == (3, 4) for z in logits)
    # The deepest exit is the hub head itself (its pretrained weights).
    np.testing.assert_allclose(logits[-1], run(model, pixels(h=24, w=24)),
                               rtol=1e-4, atol=1e-4)
    named = SelfDistillation(model, num_classes=4, exits=["stack0_block0_out",
                                                          "stack2_block0_out"])
    assert named.exit_names == ["stack0_block0_out", "stack2_block0_out"]
    ends = r"\['preprocess', 'conv1_relu', 'stage1', 'stage2', 'stage3'\]"
    with pytest.raises(ValueError, match="Candidates .*" + ends):
        SelfDistillation(model, num_classes=4, exits=["stage1", "no_such_layer"])


def test_a_nested_hub_backbone_says_how_to_flatten_it():
    hub = hub_resnet()
    with pytest.raises(ValueError, match="inside the nested model.*kdzoo.from_keras_hub"):
        SelfDistillation(hub, num_classes=4, exits=["stack0_block0_out", "stack1_block0_out"])


def test_plain_keras_export_loads_without_keras_hub(tmp_path):
    hub = hub_resnet()
    model = kdzoo.from_keras_hub(hub)
    plain = kdzoo.to_plain_keras(model)
    x = pixels()
    np.testing.assert_allclose(run(plain, x), run(model, x),
                               rtol=1e-5, atol=1e-5)
    path = str(tmp_path / "hub_resnet.keras")
    plain.save(path)
    back = keras.saving.load_model(path, safe_mode=True)  # stock classes only
    assert all(type(l).__module__.startswith("keras.") for l in back.layers)
    np.testing.assert_allclose(run(back, x), run(model, x),
                               rtol=1e-5, atol=1e-5)
    # Called with no flag, the saved model is still in inference mode (the resize's
    # training=False travels with the graph).
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x)), by_hand(hub, x),
                               rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------ distillation ---
def blobs(n, size=24, seed=0):
    """Noisy images of one colour each; the label is the dominant channel (3 classes)."""
    rng = np.random.RandomState(seed)
    colour = rng.uniform(0, 255, (n, 1, 1, 3))
    noise = rng.normal(0, 20, (n, size, size, 3))
    images = np.clip(colour + noise, 0, 255).astype("uint8")
    return images, colour.reshape(n, 3).argmax(-1).astype("int32")


def trained(model, steps=120):
    """``model`` fitted on labelled blobs: a teacher whose function is worth copying."""
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = blobs(steps * 32, seed=2)
    model.fit(x.astype("float32"), y, batch_size=32, epochs=1, verbose=0)
    return model


def distil(teacher, student, steps=120):
    keras.utils.set_random_seed(0)
    d = FunMatchDistiller(teacher, student, variant="same/ic", image_size=24, seed=0,
                          flip=False, shuffle_buffer=512)
    d.compile(optimizer=keras.optimizers.Adam(3e-3))
    x_eval, y_eval = blobs(256, seed=1)
    before = d.evaluate(x_eval, y_eval, batch_size=128, verbose=0, return_dict=True)
    d.fit(blobs(1024)[0], batch_size=32, epochs=1, steps_per_epoch=steps, verbose=0)
    after = d.evaluate(x_eval, y_eval, batch_size=128, verbose=0, return_dict=True)
    print(f"\n{teacher.name} -> {student.name}: teacher top-1 "
          f"{after['teacher_accuracy']:.3f}, agreement {before['agreement']:.3f} -> "
          f"{after['agreement']:.3f}, student top-1 {before['accuracy']:.3f} -> "
          f"{after['accuracy']:.3f}")
    assert after["teacher_accuracy"] > 0.8  # a teacher with a real, non-constant function
    return before["agreement"], after["agreement"]


def small_kdzoo(seed=0, name=None):
    keras.utils.set_random_seed(seed)
    model = kdzoo.load("fmnist_cnn_w16", weights=None, num_classes=3, input_shape=(24, 24, 3))
    model.name = name or model.name
    return model


@pytest.mark.slow
def test_hub_resnet_teacher_into_a_kdzoo_student():
    teacher = trained(kdzoo.from_keras_hub(hub_resnet(classes=3, seed=3), name="hub_teacher"))
    before, after = distil(teacher, small_kdzoo(name="kdzoo_student"))
    assert after > before + 0.3 and after > 0.8


@pytest.mark.slow
def test_kdzoo_teacher_into_a_hub_student():
    teacher = trained(small_kdzoo(seed=3, name="kdzoo_teacher"))
    student = kdzoo.from_keras_hub(hub_resnet(classes=3, seed=1), name="hub_student")
    before, after = distil(teacher, student)
    assert after > before + 0.3 and after > 0.8
