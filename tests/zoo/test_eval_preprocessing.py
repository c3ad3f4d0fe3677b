"""Cards carry their evaluation preprocessing as data, and ``kdzoo.evaluate`` runs it.

The expected protocols are the papers' (Beyer et al. 2022 evaluate ImageNet at
``resize_small(256)|central_crop(224)`` and the small sets at 160 -> 128); the
evaluation views the tests compare against are computed here with plain
``tf.image`` calls, not with kdzoo's pipeline.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import kdzoo
from kdzoo.data import fashion_mnist
from kdzoo.evaluation import top1
from kdzoo.zoo import registry
from kdzoo.zoo.preprocessing import parse_protocol

FMNIST = "fmnist_cnn_w16.kdzoo_small_same_ic"


@pytest.mark.parametrize("name, protocol", [
    ("resnet50_funmatch_imagenet", "resize_small(256)|central_crop(224)"),
    ("bit_r152x2.funmatch_teacher_pets_128", "resize_small(160)|central_crop(128)"),
    ("bit_r152x2.funmatch_teacher_flowers102_128", "resize_small(160)|central_crop(128)"),
    (FMNIST, "resize_small(28)|central_crop(28)"),
    ("bit_r50x1", "resize_small(224)|central_crop(224)"),  # bare: the central square
])
def test_cards_state_the_papers_protocol_value_range_and_interpolation(name, protocol):
    info = kdzoo.model_info(name)
    assert info["eval_preprocessing"] == protocol
    assert info["value_range"] == [0, 255]
    assert info["interpolation"] == "area"
    assert info["eval_preprocessing_source"]


def test_every_card_protocol_parses_and_crops_the_cards_input_size():
    for name in registry.cards():
        info = kdzoo.model_info(name)
        resize_small, crop = parse_protocol(info["eval_preprocessing"])
        assert crop == info["input_size"] and resize_small >= crop, name


@pytest.mark.parametrize("text", ["central_crop(224)", "resize_small(200)|central_crop(224)",
                                  "resize_small(2.5)|central_crop(2)", None])
def test_a_protocol_kdzoo_cannot_run_is_refused_with_the_form_it_takes(text):
    with pytest.raises(ValueError, match=r"resize_small\(R\)\|central_crop\(S\)|R must be"):
        parse_protocol(text, "card x")


def _with_card(monkeypatch, name, **changes):
    table = {n: dict(c) for n, c in registry.cards().items()}
    table[name].update(changes)
    monkeypatch.setattr(registry, "cards", lambda: table)


def test_a_card_that_states_its_own_protocol_is_used_and_a_bad_one_names_the_card(monkeypatch):
    _with_card(monkeypatch, FMNIST, eval_preprocessing="resize_small(32)|central_crop(28)",
               interpolation="bilinear")
    info = kdzoo.model_info(FMNIST)
    assert (info["eval_preprocessing"], info["interpolation"]) == (
        "resize_small(32)|central_crop(28)", "bilinear")
    assert info["eval_preprocessing_source"] == "the card"
    _with_card(monkeypatch, FMNIST, eval_preprocessing="resize(32)")
    with pytest.raises(ValueError, match=FMNIST.replace(".", r"\.") + r".*'resize\(32\)'"):
        kdzoo.model_info(FMNIST)
    _with_card(monkeypatch, FMNIST, interpolation="cubic")
    with pytest.raises(ValueError, match=r"interpolation 'cubic' is not one of"):
        kdzoo.model_info(FMNIST)


def _top1(model, views, labels):
    return 100 * float(np.mean(model.predict(views, verbose=0).argmax(-1) == labels))


def test_evaluate_by_name_runs_the_cards_protocol_on_arrays(monkeypatch):
    images, labels = fashion_mnist.load("test")
    images, labels = images[:300], labels[:300]
    model = kdzoo.load(FMNIST)
    # The card's own protocol (the identity at 28 px) ...
    plain = kdzoo.evaluate(FMNIST, (images, labels))
    assert plain["protocol"] == "resize_small(28)|central_crop(28)"
    assert plain["top1"] == pytest.approx(_top1(model, images, labels))
    # ... and a card that says otherwise: bilinear up to 32, then the central 28.
    _with_card(monkeypatch, FMNIST, eval_preprocessing="resize_small(32)|central_crop(28)",
               interpolation="bilinear")
    views = tf.image.resize(tf.cast(images, tf.float32), [32, 32], "bilinear")[:, 2:30, 2:30]
    views = tf.clip_by_value(views, 0.0, 255.0).numpy()
    got = kdzoo.evaluate(FMNIST, (images, labels))
    assert (got["protocol"], got["interpolation"]) == ("resize_small(32)|central_crop(28)",
                                                       "bilinear")
    assert got["top1"] == pytest.approx(_top1(model, views, labels))
    assert got["top1"] != plain["top1"]  # the protocol is really applied, not just printed


def test_top1_of_predictions_gives_the_figures_of_the_reports_hand_copies():
    """The Fashion-MNIST reports' ``100 * mean(argmax(predict) == labels)`` copies are now
    ``kdzoo.evaluation.top1``: the same value, to the bit, on a saved zoo model's logits."""
    images, labels = fashion_mnist.load("test")
    images, labels = images[:2000].astype("float32"), labels[:2000]
    logits = kdzoo.load(FMNIST).predict(images, batch_size=1000, verbose=0)
    hand = 100 * float(np.mean(np.argmax(logits, -1) == labels))  # the recipes' old line
    assert top1(logits, labels) == hand and 50 < hand < 100  # a trained model, not 0 / 100
    assert kdzoo.evaluate(FMNIST, (images, labels))["top1"] == pytest.approx(hand)
    assert top1(logits, logits.argmax(-1)) == 100.0  # agreement of a model with itself
    assert top1([[2.0, 1, 0], [0, 3, 1], [1, 0, 5], [4, 0, 1]], [0, 1, 2, 1]) == 75.0
    with pytest.raises(ValueError, match=r"top1 needs logits \(N, C\) and N labels"):
        top1(logits, labels[:-1])
    with pytest.raises(ValueError, match="top1 needs logits"):
        top1(logits.argmax(-1), labels)  # classes, not logits


def _small_side_then_centre(image, short, crop):
    h, w = image.shape[:2]
    nh, nw = round(h * short / min(h, w)), round(w * short / min(h, w))
    image = tf.image.resize(tf.cast(image, tf.float32), [nh, nw], "area").numpy()
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return np.clip(image[top:top + crop, left:left + crop], 0, 255)


class _Seen(keras.layers.Layer):
    """Identity that keeps the batches it is called on (kdzoo.evaluate calls eagerly)."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def call(self, x):
        if tf.executing_eagerly():
            self.batches.append(np.asarray(x))
        return x

    def compute_output_shape(self, shape):
        return shape


def test_evaluate_on_tfds_uses_the_specs_protocol(tmp_path):
    keras.utils.set_random_seed(0)
    seen = _Seen()
    inputs = keras.Input((128, 128, 3))
    x = keras.layers.Rescaling(1 / 255.0)(seen(inputs))
    x = keras.layers.Conv2D(8, 5, strides=4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(37)(x))
    with tfds.testing.mock_data(num_examples=6):
        got = kdzoo.evaluate(model, "pets", split="test", data_dir=str(tmp_path))
        examples = list(kdzoo.data.load_split("pets", "test", data_dir=str(tmp_path))
                        .as_numpy_iterator())
    assert got["protocol"] == "resize_small(160)|central_crop(128)"
    assert got["num_examples"] == 6
    views = np.stack([_small_side_then_centre(x, 160, 128) for x, _ in examples])
    assert min(x.shape[0] for x, _ in examples) != 160  # the mock images need the resize
    np.testing.assert_allclose(np.concatenate(seen.batches), views, atol=1e-3)
    labels = np.array([y for _, y in examples])
    seen.batches.clear()
    assert got["top1"] == pytest.approx(_top1(model, views, labels))
