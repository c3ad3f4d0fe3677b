"""Every ```python block of README.md runs as written (issue 27), so the README cannot drift.

Each block is taken from README.md at test time and run unchanged with ``exec``, in a
fresh folder (relative paths in the README land there). Where a block would download,
the test first writes a file in the published format where the download would put it:
a BiT ``.npz`` in kdzoo's download cache (``$KERAS_HOME/kdzoo/downloads``), a keras-hub
``save_to_preset`` folder in kagglehub's cache (``$KAGGLEHUB_CACHE``). Names a block uses
without defining them are the user's own data or models (``images_uint8_224``, and
``teacher``/``student`` in the ``keras.distillation`` block); the test supplies them.
Run: python -m pytest tests/test_readme.py -q -n 0
"""

import ast
import os
import re
import shutil

import keras
import numpy as np
import pytest

from reference.bit_reference import random_bit_checkpoint, to_big_vision

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    blocks = []
    for indent, body in re.findall(r"^( *)```python\n(.*?)^\1```", text, re.S | re.M):
        lines = body.splitlines()
        blocks.append("\n".join(line[len(indent):] for line in lines) + "\n")
    return blocks


def block(marker):
    """The one README block containing ``marker`` (a test per block: none goes untested)."""
    found = [b for b in readme_blocks() if marker in b]
    assert len(found) == 1, f"README.md has {len(found)} python blocks containing {marker!r}"
    return found[0]


MARKERS = ('kdzoo.load("resnet50_funmatch_imagenet")', "kdzoo.from_keras_hub(",
           "kdzoo.FunMatchDistiller(", "keras.distillation.Distiller(")


def test_every_python_block_of_the_readme_has_a_test_here():
    blocks = readme_blocks()
    assert len(blocks) == len(MARKERS)
    for b in blocks:
        ast.parse(b)  # a syntax error in the README fails here, naming nothing else
        assert sum(m in b for m in MARKERS) == 1, b


def run_block(code, scope, capsys):
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102  (our own README)
    return capsys.readouterr().out


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    yield tmp_path
    keras.backend.clear_session()


@pytest.mark.slow
def test_quick_start_pretrained_model(in_tmp, capsys):
    import kdzoo
    from kdzoo.zoo import download_cache, registry
    card = registry.cards()["bit_r50x1.funmatch_in1k_224"]
    params = random_bit_checkpoint(50, 1, 1000, seed=3)
    # The card's download, where download_cache would store it (big_vision's naming, as
    # big_vision's distill checkpoints are written), and the user's own copy of the file.
    target = os.path.join(download_cache.cache_root(), "downloads",
                          f"{card['name']}-{os.path.basename(card['url'])}")
    os.makedirs(os.path.dirname(target))
    np.savez(target, **{"params/" + k: v for k, v in to_big_vision(params).items()})
    shutil.copy(target, in_tmp / "R50x1_224.npz")
    images = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3)).astype(np.uint8)
    scope = {"images_uint8_224": images}
    out = run_block(block(MARKERS[0]), scope, capsys)

    assert "'bit_r50x1.funmatch_in1k_224'" in out and "'bit_r50x1.funmatch_in1k_160'" in out
    assert "'top1': 82.8" in out  # the model card, printed
    logits = keras.ops.convert_to_numpy(scope["logits"])
    assert logits.shape == (2, 1000) and np.all(np.isfinite(logits))
    assert not np.allclose(logits[0], logits[1])  # the file's random weights, not a zero head
    kernel, bias = scope["backbone"].get_layer("head").get_weights()
    assert kernel.shape == (2048, 37) and not kernel.any() and not bias.any()
    assert tuple(scope["features"].output.shape) == (None, 2048)
    assert list(scope["stages"]) == ["stage1", "stage2", "stage3", "stage4"]
    np.testing.assert_array_equal(  # the user's file and the cached download: same weights
        scope["local"].get_layer("block4_unit03_c_conv").get_weights()[0],
        scope["model"].get_layer("block4_unit03_c_conv").get_weights()[0])
    converted = os.path.join(download_cache.cache_root(), "converted",
                             f"{card['name']}.weights.h5")
    assert os.path.exists(converted)
    assert kdzoo.model_info("resnet50_funmatch_imagenet")["name"] == card["name"]


def published_resnet_50(folder):
    """keras-hub's ResNet-50 v1 ImageClassifier (random weights), saved as its preset is."""
    import keras_hub
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=[3, 4, 6, 3],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False)
    converter = keras_hub.layers.ResNetImageConverter(
        image_size=(224, 224), scale=[1 / (255 * s) for s in std],
        offset=[-m / s for m, s in zip(mean, std)])
    model = keras_hub.models.ResNetImageClassifier(
        backbone=backbone, num_classes=1000,
        preprocessor=keras_hub.models.ResNetImageClassifierPreprocessor(image_converter=converter))
    model.save_to_preset(str(folder))
    return model


@pytest.mark.slow
def test_keras_hub_block(in_tmp, monkeypatch, capsys):
    import keras_hub
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_model_handle
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(in_tmp / "kagglehub"))
    published_resnet_50(in_tmp / "my_preset")  # the README's own preset folder
    handle = keras_hub.models.ImageClassifier.presets["resnet_50_imagenet"]["kaggle_handle"]
    handle = parse_model_handle(handle.removeprefix("kaggle://"))
    cache = Cache()  # each file where kagglehub.model_download keeps it, marked complete
    for name in os.listdir(in_tmp / "my_preset"):
        dst = cache.get_path(handle, name)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy(in_tmp / "my_preset" / name, dst)
        cache.mark_as_complete(handle, name)
    scope = {}
    run_block(block(MARKERS[1]), scope, capsys)

    teacher, student = scope["teacher"], scope["student"]
    assert teacher.output.shape[-1] == 1000 and student.output.shape[-1] == 37
    pixels = np.random.default_rng(1).integers(0, 256, (2, 224, 224, 3)).astype("float32")
    reloaded = keras_hub.models.ImageClassifier.from_preset(str(in_tmp / "my_preset"))
    expected = keras.ops.convert_to_numpy(  # keras-hub's own pipeline on the same files
        reloaded(reloaded.preprocessor(pixels), training=False))
    # Raw pixels in, no training flag (as the README calls a model): preprocessing inside,
    # inference mode (the resize's training=True default must not reach the BNs).
    got = keras.ops.convert_to_numpy(teacher(pixels))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.mark.slow
def test_distillation_in_your_own_keras_code(in_tmp, capsys):
    scope = {}
    out = run_block(block(MARKERS[2]), scope, capsys)

    printed = re.findall(r"^\{'accuracy'.*\}$", out, re.M)
    assert len(printed) == 1, out[-2000:]
    metrics = ast.literal_eval(printed[0])
    assert metrics["teacher_accuracy"] > 0.9  # the zoo teacher (93.1 % on this split)
    assert metrics["accuracy"] > 0.4, metrics  # 160 steps from random init: chance is 0.1
    assert metrics["agreement"] > 0.4, metrics
    student = scope["d"].student
    x = scope["val_images_and_labels"][0][:16]
    plain = keras.saving.load_model(str(in_tmp / "fmnist_plain.keras"))
    saved = keras.saving.load_model(str(in_tmp / "fmnist_student.keras"))
    np.testing.assert_allclose(plain.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(saved.predict(x, verbose=0), student.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    assert scope["m"].history.history["loss"][-1] < scope["m"].history.history["loss"][0]
    early = out[out.index(printed[0]) + len(printed[0]):]  # EarlyExit.predict's dict, printed
    assert "'logits': array(" in early and "'exit': array(" in early, early[-2000:]


def test_keras_distiller_block(in_tmp, capsys):
    inputs = keras.Input((6,))
    teacher = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Dense(8, name="stage4")(inputs)))
    s_in = keras.Input((6,))
    h = keras.layers.Dense(5)(s_in)
    adapter = keras.layers.Dense(8, name="adapter")(h)
    student = keras.Model(s_in, keras.layers.Add()([keras.layers.Dense(4)(h),
                                                    0.0 * keras.layers.Dense(4)(adapter)]))
    scope = {"teacher": teacher, "student": student}  # no keras: the block imports it
    run_block(block(MARKERS[3]), scope, capsys)

    kd = scope["kd"]
    assert isinstance(kd, keras.distillation.Distiller)
    kd.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(2).normal(size=(32, 6)).astype("float32")
    history = kd.fit(x, np.zeros(32, "int64"), epochs=3, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
