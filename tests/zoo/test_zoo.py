"""The zoo: names, cards, BiT architecture, the .npz converter and kdzoo.load."""

import json
import os
import re

import keras
import numpy as np
import pytest

import kdzoo
from kdzoo.zoo import registry, loader as zoo
from kdzoo.errors import CheckpointError, DownloadError
from reference.bit_reference import (bit_checkpoint_shapes, bit_forward, random_bit_checkpoint,
                           to_big_vision)

IMAGE = 64  # BiT is fully convolutional: a small input keeps the NumPy reference fast


@pytest.fixture(scope="module")
def r50_params():
    return random_bit_checkpoint(50, 1, 1000, seed=1)


@pytest.fixture(scope="module")
def r50_npz(r50_params, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "R50x1_224.npz"
    np.savez(path, **r50_params)
    return str(path)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(2, IMAGE, IMAGE, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def reference(r50_params, images):
    # The FunMatch card (``loaded``) follows big_vision: -inf stem max-pool padding.
    return bit_forward(r50_params, images, depth=50, pool_pad=-np.inf)


@pytest.fixture(scope="module")
def loaded(r50_npz):
    return kdzoo.load("resnet50_funmatch_imagenet", weights=r50_npz,
                      input_shape=(IMAGE, IMAGE, 3))


def test_names_are_sorted_filterable_and_aliases_resolve():
    names = kdzoo.list_models()
    assert names == sorted(names)
    for arch in ("bit_r50x1", "bit_r50x3", "bit_r101x1", "bit_r101x3", "bit_r152x2", "bit_r152x4"):
        assert arch in names
    assert set(kdzoo.list_models("bit_r152x2.funmatch_teacher_*")) == {
        "bit_r152x2.funmatch_teacher_" + t for t in
        ("in1k_224", "in1k_384", "flowers102_128", "pets_128", "food101_128", "sun397_128")}
    info = kdzoo.model_info("resnet50_funmatch_imagenet")
    assert info["name"] == "bit_r50x1.funmatch_in1k_224"
    assert info["url"].endswith("/distill/R50x1_224.npz")
    assert info["top1"] == 82.8 and info["input_size"] == 224
    for key in ("name", "architecture", "dataset", "input_size", "url", "sha256", "top1",
                "preprocessing", "format", "size_bytes", "top1_source", "license"):
        assert key in info
    arch = kdzoo.model_info("bit_r50x1")
    assert arch["top1"] is None and arch["url"] is None
    assert "bit_r50x1.funmatch_in1k_224" in arch["checkpoints"]


def test_every_card_points_at_a_registered_architecture_and_a_bit_url():
    for name, card in registry.cards().items():
        assert card["architecture"] in registry.architectures(), name
        assert name.startswith(card["architecture"] + "."), name
        if card["format"] == "bit_npz":
            assert card["url"].startswith("https://storage.googleapis.com/bit_models/"), name
    ilsvrc = [n for n in registry.cards() if n.endswith(".bit_m_in21k_ft_in1k")]
    upstream = [n for n in registry.cards() if n.endswith(".bit_m_in21k")]
    assert len(ilsvrc) == 6 and len(upstream) == 6


# The published file names, from the architecture names alone (bit_r{depth}x{width} ->
# BiT-M-R{depth}x{width}, lower-case x: the bucket is case-sensitive; big_transfer's README)
# and, for the FunMatch teachers, big_vision configs/proj/distill/common.py `inits`.
BIT_BUCKET = "https://storage.googleapis.com/bit_models/"
TEACHER_FILES = {"flowers102_128": "R152x2_T_flowers128.npz", "pets_128": "R152x2_T_pet128.npz",
                 "food101_128": "R152x2_T_food128.npz", "sun397_128": "R152x2_T_sun128.npz",
                 "in1k_224": "R152x2_T_224.npz", "in1k_384": "R152x2_T_384.npz"}


def test_card_urls_are_the_published_file_names():
    checked = 0
    for name, card in registry.cards().items():
        arch, _, ckpt = name.partition(".")
        match = re.fullmatch(r"bit_r(\d+)x(\d+)", arch)
        if match is None:
            continue
        stem = f"BiT-M-R{match.group(1)}x{match.group(2)}"
        expected = {"bit_m_in21k": f"{BIT_BUCKET}{stem}.npz",
                    "bit_m_in21k_ft_in1k": f"{BIT_BUCKET}{stem}-ILSVRC2012.npz"}
        for teacher, file in TEACHER_FILES.items():
            expected[f"funmatch_teacher_{teacher}"] = f"{BIT_BUCKET}distill/{file}"
        expected["funmatch_in1k_224"] = f"{BIT_BUCKET}distill/R50x1_224.npz"
        expected["funmatch_in1k_160"] = f"{BIT_BUCKET}distill/R50x1_160.npz"
        assert card["url"] == expected[ckpt], name
        assert "X" not in card["url"].rsplit("/", 1)[-1].replace("ILSVRC", ""), name
        checked += 1
    assert checked == 12 + 6 + 2  # 12 BiT-M cards, 6 FunMatch teachers, 2 students


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"Did you mean 'resnet50_funmatch_imagenet'"):
        kdzoo.load("resnet50_funmach_imagenet")
    with pytest.raises(ValueError, match="bit_r50x1"):
        kdzoo.model_info("bit_r50_x1")


# timm's published parameter counts (millions, 1000-class head) for resnetv2_*_bit models.
TIMM_MILLIONS = {(50, 1): 25.55, (50, 3): 217.32, (101, 1): 44.54, (101, 3): 387.93,
                 (152, 2): 236.34, (152, 4): 936.53}


@pytest.mark.slow
@pytest.mark.parametrize("depth,width", sorted(TIMM_MILLIONS))
def test_parameter_counts_match_the_published_layout(depth, width):
    model = kdzoo.load(f"bit_r{depth}x{width}", weights=None, input_shape=(32, 32, 3))
    expected = sum(int(np.prod(s)) for s in bit_checkpoint_shapes(depth, width, 1000).values())
    assert model.count_params() == expected
    assert round(model.count_params() / 1e6, 2) == TIMM_MILLIONS[(depth, width)]
    if (depth, width) == (50, 1):
        assert model.count_params() == 25_549_352
    del model
    keras.backend.clear_session()


@pytest.mark.slow
def test_scratch_students_get_bit_papers_zero_head(images):
    from kdzoo.train.recipe import load_student
    from kdzoo.models.bit import build_bit, zero_init_head

    # big_vision models/bit_paper.py: head_zeroinit=True (kernel and bias zero).
    tiny = build_bit(50, 0.5, num_classes=7, input_shape=(IMAGE, IMAGE, 3), units=(1, 1, 1, 1),
                     head_zeroinit=True)
    assert all(not np.any(w) for w in tiny.get_layer("head").get_weights())
    np.testing.assert_array_equal(tiny.predict(images, verbose=0), np.zeros((2, 7)))
    # Off by default: a random zoo model (and so a teacher built from scratch) keeps Glorot.
    plain = build_bit(50, 0.5, num_classes=7, input_shape=(IMAGE, IMAGE, 3), units=(1, 1, 1, 1))
    assert np.abs(plain.get_layer("head").get_weights()[0]).max() > 0.01
    # The recipes' student from scratch (--student_init unset) is zero-headed; the
    # backbone is random, so its features are not zero.
    student = load_student("bit_r50x1", None, num_classes=5, input_shape=(IMAGE, IMAGE, 3))
    assert all(not np.any(w) for w in student.get_layer("head").get_weights())
    features = keras.Model(student.input, student.get_layer("avg_pool").output)
    assert np.abs(features.predict(images, verbose=0)).max() > 0
    with pytest.raises(ValueError, match="no layer named 'head'.*include_top=False"):
        zero_init_head(features)
    del student, features
    keras.backend.clear_session()


def test_logits_match_an_independent_numpy_bit(loaded, images, reference):
    logits = loaded.predict(images, verbose=0)
    np.testing.assert_allclose(logits, reference[1], rtol=2e-3, atol=2e-3 * np.abs(reference[1]).max())
    assert loaded.output.shape[-1] == 1000


def test_raw_uint8_and_float_pixels_give_the_same_result(loaded, images):
    a = loaded.predict(images, verbose=0)
    b = loaded.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert loaded.get_layer("preprocess") is not None


@pytest.mark.slow
def test_big_vision_naming_loads_to_the_same_model(r50_params, tmp_path, loaded, images):
    path = tmp_path / "bv.npz"
    np.savez(path, **{"params/" + k: v for k, v in to_big_vision(r50_params).items()})
    model = kdzoo.load("bit_r50x1", weights=str(path), input_shape=(IMAGE, IMAGE, 3),
                       build_options={"stem_pool_padding": "neg_inf"})  # as ``loaded``'s card
    np.testing.assert_allclose(model.predict(images, verbose=0), loaded.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_new_head_and_feature_extractor(r50_npz, loaded, images, reference):
    tuned = kdzoo.load("resnet50_funmatch_imagenet", weights=r50_npz, num_classes=5,
                       input_shape=(IMAGE, IMAGE, 3))
    kernel, bias = tuned.get_layer("head").get_weights()
    assert kernel.shape == (2048, 5) and not kernel.any() and not bias.any()
    np.testing.assert_array_equal(tuned.get_layer("block4_unit03_c_conv").get_weights()[0],
                                  loaded.get_layer("block4_unit03_c_conv").get_weights()[0])
    features = kdzoo.load("resnet50_funmatch_imagenet", weights=r50_npz, include_top=False,
                          pooling="avg", input_shape=(IMAGE, IMAGE, 3))
    np.testing.assert_allclose(features.predict(images, verbose=0), reference[0],
                               rtol=2e-3, atol=2e-3 * np.abs(reference[0]).max())
    fmap = kdzoo.load("bit_r50x1", weights=None, include_top=False, input_shape=(IMAGE, IMAGE, 3))
    assert tuple(fmap.output.shape) == (None, 2, 2, 2048)


def test_stage_outputs_are_exposed_by_name(loaded):
    stages = kdzoo.models.stage_outputs(loaded)
    assert list(stages) == ["stage1", "stage2", "stage3", "stage4"]
    assert [t.shape[-1] for t in stages.values()] == [256, 512, 1024, 2048]
    assert [t.shape[1] for t in stages.values()] == [16, 8, 4, 2]


@pytest.mark.slow
def test_round_trips_through_weights_h5_and_keras(loaded, images, tmp_path):
    expected = loaded.predict(images, verbose=0)
    h5 = str(tmp_path / "r50.weights.h5")
    loaded.save_weights(h5)
    again = kdzoo.load("resnet50_funmatch_imagenet", weights=h5, input_shape=(IMAGE, IMAGE, 3))
    np.testing.assert_array_equal(again.predict(images, verbose=0), expected)
    path = str(tmp_path / "r50.keras")
    loaded.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored.predict(images, verbose=0), expected)


def _mutated(params, tmp_path, change):
    params = dict(params)
    change(params)
    path = tmp_path / "bad.npz"
    np.savez(path, **params)
    return str(path)


@pytest.mark.parametrize("change,message", [
    (lambda p: p.pop("resnet/block3/unit02/b/group_norm/beta"), r"lacks the key 'resnet/block3/unit02/b/group_norm/beta'"),
    (lambda p: p.__setitem__("resnet/block2/unit01/c/standardized_conv2d/kernel", np.zeros((1, 1, 128, 64), "float32")), r"block2/unit01/c/standardized_conv2d/kernel' has shape"),
    (lambda p: p.__setitem__("resnet/block4/unit04/a/group_norm/gamma", np.ones(2048, "float32")), r"does not use.*block4/unit04"),
    (lambda p: p.__setitem__("resnet/group_norm/beta", np.full(2048, np.nan, "float32")), r"NaN"),
])
@pytest.mark.slow
def test_bad_checkpoints_name_the_file_and_key(r50_params, tmp_path, change, message):
    path = _mutated(r50_params, tmp_path, change)
    with pytest.raises(CheckpointError, match=message) as info:
        kdzoo.load("bit_r50x1", weights=path, input_shape=(IMAGE, IMAGE, 3))
    assert "bad.npz" in str(info.value)


def test_truncated_and_pickled_files_are_refused(r50_npz, tmp_path):
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(r50_npz, "rb").read()[: 5_000_000])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        kdzoo.load("bit_r50x1", weights=str(truncated))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        kdzoo.load("bit_r50x1", weights=str(pickled))
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        kdzoo.load("bit_r50x1", weights=str(tmp_path / "nowhere.npz"))
    with pytest.raises(CheckpointError, match="not a BiT checkpoint"):
        np.savez(tmp_path / "other.npz", w=np.zeros(3))
        kdzoo.load("bit_r50x1", weights=str(tmp_path / "other.npz"))


@pytest.fixture
def offline_card(monkeypatch, tmp_path):
    """The 224 px student's card, pointed at a refused loopback URL, with a fresh cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    cards = dict(registry.cards())
    card = dict(cards["bit_r50x1.funmatch_in1k_224"], url="http://127.0.0.1:9/distill/R50x1_224.npz")
    cards[card["name"]] = card
    monkeypatch.setattr(registry, "cards", lambda: cards)
    return card


def test_no_network_names_the_url_and_how_to_supply_the_file(offline_card):
    with pytest.raises(DownloadError) as info:
        kdzoo.load("resnet50_funmatch_imagenet", input_shape=(IMAGE, IMAGE, 3))
    message = str(info.value)
    assert "http://127.0.0.1:9/distill/R50x1_224.npz" in message
    assert "weights='/path/to/R50x1_224.npz'" in message
    downloads = os.path.join(zoo.cache_root(), "downloads")
    assert not os.path.isdir(downloads) or os.listdir(downloads) == []


@pytest.mark.slow
def test_file_placed_by_hand_is_converted_once_and_cached(offline_card, r50_npz, images, reference):
    target = os.path.join(zoo.cache_root(), "downloads", "bit_r50x1.funmatch_in1k_224-R50x1_224.npz")
    os.makedirs(os.path.dirname(target))
    with open(r50_npz, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    model = kdzoo.load("resnet50_funmatch_imagenet", input_shape=(IMAGE, IMAGE, 3))
    converted = os.path.join(zoo.cache_root(), "converted", "bit_r50x1.funmatch_in1k_224.weights.h5")
    assert os.path.exists(converted)
    assert not [f for f in os.listdir(os.path.dirname(converted)) if "tmp" in f]
    os.remove(target)  # the converted cache is used from now on; no download needed
    again = kdzoo.load("resnet50_funmatch_imagenet", input_shape=(IMAGE, IMAGE, 3))
    np.testing.assert_array_equal(again.predict(images, verbose=0), model.predict(images, verbose=0))
    np.testing.assert_allclose(model.predict(images, verbose=0), reference[1], rtol=2e-3,
                               atol=2e-3 * np.abs(reference[1]).max())


def test_wrong_hash_is_refused_and_not_kept(offline_card, tmp_path):
    offline_card["sha256"] = "0" * 64
    target = os.path.join(zoo.cache_root(), "downloads", "bit_r50x1.funmatch_in1k_224-R50x1_224.npz")
    os.makedirs(os.path.dirname(target))
    with open(target, "wb") as f:
        f.write(b"not the published file")
    with pytest.raises(DownloadError, match="R50x1_224.npz"):
        kdzoo.load("resnet50_funmatch_imagenet", input_shape=(IMAGE, IMAGE, 3))
    assert not os.path.exists(target)


def test_architecture_without_weights_says_which_checkpoints_exist():
    with pytest.raises(ValueError, match=r"bit_r152x4\.bit_m_in21k"):
        kdzoo.load("bit_r152x4")
    with pytest.raises(ValueError, match="positive int"):
        kdzoo.load("bit_r50x1", weights=None, num_classes=0)
    with pytest.raises(ValueError, match=r"\.npz .* \.weights\.h5"):
        kdzoo.load("bit_r50x1", weights=__file__)


def test_readme_model_table_is_generated_from_the_cards():
    from kdzoo.zoo.cards_table import markdown_table
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8").read()
    block = re.search(r"<!-- models:start -->\n(.*?)<!-- models:end -->", readme, re.S)
    assert block, "README.md lacks the generated model table markers"
    assert block.group(1).strip() == markdown_table().strip(), (
        "README model table is stale: run `python -m kdzoo.zoo.cards_table --write README.md`")
