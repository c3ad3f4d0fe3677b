"""Issue 24, sections 3.4 and 3.8 on tiny real runs: a run's own images (``train_images``),
the out-of-domain sources, and the Shampoo arm's optimizer inside a FunMatch run."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "recipes"))


def _arm(section, arm, workdir, **changes):
    import fashion_mnist as fm
    import fashion_mnist_sections as sec
    fm.FLAGS(["fashion_mnist.py", "--sections"])
    ((_, run),) = [(k, r) for k, r in sec.plan_sections(fm.settings(), [section], "/tmp/x",
                                                         fm.method_run)
                   if k["arm"] == arm and k["seed"] == 0 and k["epochs"] == 300]
    return dataclasses.replace(run, workdir=str(workdir), batch_size=8, log_every_steps=1,
                               checkpoint_every_steps=2, warmup_steps=1, eval_roles=(),
                               checkpoint_every_minutes=None, **changes)


def test_digits_are_sklearns_upsampled_to_28px():
    import tensorflow as tf
    from sklearn.datasets import load_digits
    import fashion_mnist_ood as ood
    images, small = ood.digits(), load_digits().images
    assert images.shape == (1797, 28, 28, 1) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    back = tf.image.resize(images.astype(np.float32), (8, 8), method="area").numpy()[..., 0]
    r = np.corrcoef(back.ravel(), small.ravel())[0, 1]
    assert r > 0.95  # the same digits, not a reshuffle
    assert abs(back.mean() - small.mean() * 255 / 16) < 0.05 * 255


def test_natural_crops_are_fixed_by_their_seed_and_not_flat():
    import fashion_mnist_ood as ood
    a, b, c = ood.natural_crops(64, 0), ood.natural_crops(64, 0), ood.natural_crops(64, 1)
    assert a.shape == (64, 28, 28, 1) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.mean(a.reshape(64, -1).std(1) > 2) > 0.9  # textured crops, not blank ones


def test_outside_subset_is_the_train_set_minus_the_runners_1000():
    import fashion_mnist_ood as ood
    from kdzoo.data import fashion_mnist
    from kdzoo.train import train_examples
    run = _arm("3.8", "in_domain_1000", "/tmp/unused")
    subset, n = train_examples(run)  # the runner's own draw
    subset = np.stack([x for x, _ in subset.as_numpy_iterator()])
    outside, (every, _) = ood.outside_subset(), fashion_mnist.load("train")
    assert n == 1000 and len(outside) == 59_000
    key = lambda a: sorted(x.tobytes() for x in a)  # noqa: E731  (a multiset of images)
    assert key(np.concatenate([subset, outside])) == key(every)


@pytest.mark.parametrize("images, labels, at_least, match", [
    (np.zeros((4, 28, 28, 1), np.float32), None, None, "uint8 images"),
    (np.zeros((4, 28, 28, 3), np.uint8), None, None, r"\[N, H, W, 1\]"),
    (np.zeros((4, 28, 28, 1), np.uint8), np.array([0, 1, 2, 10]), None, r"outside \[0, 10\)"),
    (np.zeros((4, 28, 28, 1), np.uint8), None, 8, "num_train_examples=8"),
])
def test_bad_train_images_are_refused_naming_the_option(images, labels, at_least, match):
    from kdzoo.data import get_spec
    from kdzoo.data.arrays import array_examples
    source = (lambda: images) if labels is None else (lambda: (images, labels))
    with pytest.raises(ValueError, match="train_images: .*" + match):
        array_examples(source, get_spec("fashion_mnist"), at_least)


def test_a_tiny_digits_run_trains_on_the_digits(tmp_path):
    import keras
    from kdzoo.train import plan, study
    run = _arm("3.8", "digits_1797", tmp_path, num_train_examples=16, epochs=1)
    assert plan(run)[1]["train_examples"] == 16 and study.run_one(run)
    record = json.load(open(tmp_path / "config.json"))
    assert record["train_images"] == "fashion_mnist_ood.digits"
    assert record["train_per_class"] is None
    assert json.load(open(tmp_path / "metrics.json"))["total_steps"] == 2  # round(16 / 8)
    assert study.is_finished(run) and not study.run_one(run)  # finished: not retrained
    assert keras.saving.load_model(tmp_path / "model.keras").input_shape == (None, 28, 28, 1)


def _optimizer_variables(workdir):
    import h5py
    state = json.load(open(os.path.join(workdir, "checkpoints", "state.json")))
    with h5py.File(os.path.join(workdir, "checkpoints", state["weights"])) as f:
        return state["step"], len(f["optimizer"]["vars"])


def test_a_tiny_shampoo_run_steps_with_shampoo_and_keeps_its_state(tmp_path):
    import keras
    from kdzoo.train import study
    runs = {arm: _arm("3.4", arm, tmp_path / arm, epochs=0.08)  # round(0.08 * 1000 / 8) = 10
            for arm in ("funmatch_shampoo", "funmatch_adam")}
    assert all(study.run_one(r) for r in runs.values())
    record = json.load(open(tmp_path / "funmatch_shampoo" / "config.json"))
    assert record["optimizer"]["callable"] == "fashion_mnist_sections.shampoo"
    assert record["optimizer"]["kwargs"] == {"lr": 3e-3, "weight_decay": 1e-4}
    (step, shampoo), (_, adam) = (_optimizer_variables(tmp_path / a) for a in runs)
    # Adam: 2 moments per variable; Shampoo adds statistics and roots per block.
    n = len(keras.saving.load_model(tmp_path / "funmatch_adam" / "model.keras")
            .trainable_variables)
    assert step == 10 and adam >= 2 * n and shampoo > adam
    trained = keras.saving.load_model(tmp_path / "funmatch_shampoo" / "model.keras")
    assert all(np.all(np.isfinite(w)) for w in trained.get_weights())
