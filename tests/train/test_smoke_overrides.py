"""``smoke_overrides``: every value ``--smoke`` substitutes, in one place (issue 26), checked
against what the docs and the flags' help say a smoke run is, and ``resolve``'s precedence
(an explicit flag beats the smoke value; a same-size teacher stays one)."""

import types

import pytest

import kdzoo
from kdzoo.train.recipe import FunMatchRecipe, SelfDistillRecipe, funmatch_settings, \
    self_distill_settings
from kdzoo.train.recipe_config import RUN_DEFAULTS, resolve, smoke_overrides

PRESETS = {"fast": dict(epochs=10, lr=1e-2, weight_decay=1e-3, temperature=5),
           "cross": dict(epochs=10, lr=1e-2, weight_decay=1e-3, temperature=5,
                         teacher_image_size=384)}
RECIPE = FunMatchRecipe("pets", "bit_r152x2.funmatch_teacher_pets_128", PRESETS)


def _options(**changes):
    values = dict(epochs=None, batch_size=None, log_every_steps=None,
                  checkpoint_every_steps=None, smoke=True, preset="fast", teacher=None,
                  teacher_image_size=None, student="bit_r50x1", student_init=None,
                  arch="cifar_resnet18")
    values.update(changes)
    return types.SimpleNamespace(**values)


@pytest.mark.parametrize("method", ["funmatch", "self_distill"])
def test_a_smoke_run_is_what_the_docs_say(method):
    s = smoke_overrides(method)
    # docs/reliability.md sec. 9: "8 smoke images", a smoke run of batch 4;
    # tests/train/test_train.py: 8 images, batch 4, 1 epoch = 2 steps.
    assert (s["num_train_examples"], s["batch_size"], s["epochs"]) == (8, 4, 1)
    # recipes/common.py --log_every_steps / --checkpoint_every_steps help: "2 in --smoke".
    assert (s["log_every_steps"], s["checkpoint_every_steps"]) == (2, 2)
    # --smoke help: on tfds.testing.mock_data, offline: no prepared data is required.
    assert s["mock_data"] is True and s["require_data"] is False
    # A whole eval batch fits in the 8 mock images (no empty eval).
    assert 0 < s["eval_batch_size"] <= s["num_train_examples"]
    assert s["verbose"] == 2  # one line per epoch, not a progress bar in logs


def test_the_funmatch_smoke_models_and_sizes():
    s = smoke_overrides("funmatch")
    # docs/recipes.md: "--smoke trains tiny BiTs"; the dry-run test: student "tiny_bit".
    assert (s["teacher"], s["student"], s["student_init"]) == ("tiny_bit", "tiny_bit", None)
    # docs/recipes.md Evaluation: "--smoke at 32 px".
    assert s["image_size"] == 32
    assert s["teacher_image_size"] > s["image_size"]  # a cross-resolution teacher stays one
    steps = s["epochs"] * s["num_train_examples"] // s["batch_size"]
    assert 0 < s["warmup_steps"] <= steps  # warm-up inside the 2-step smoke run


def test_the_self_distill_smoke_model_is_a_zoo_model_at_the_recipe_resolution():
    s = smoke_overrides("self_distill", image_size=24)
    assert kdzoo.model_info(s["student"])["name"] == s["student"]
    assert s["student_kwargs"] == {"input_shape": (24, 24, 3)}


def test_an_unknown_method_names_the_argument():
    with pytest.raises(ValueError, match=r"smoke_overrides\(method='bert'\).*funmatch"):
        smoke_overrides("bert")


def test_explicit_flags_beat_the_smoke_values_and_the_rest_does_not():
    defaults = dict(RUN_DEFAULTS, epochs=1000, batch_size=512, image_size=128,
                    teacher_image_size=None, warmup_steps=1500)
    got = resolve(defaults, _options(epochs=3, batch_size=16, log_every_steps=7), True)
    assert (got["epochs"], got["batch_size"], got["log_every_steps"]) == (3, 16, 7)
    assert got["checkpoint_every_steps"] == 2 and got["image_size"] == 32
    assert got["teacher_image_size"] is None  # same-size teacher: still the student's size
    assert got["warmup_steps"] == 2 and got["num_train_examples"] == 8
    # Only the keys the defaults hold: no stray smoke value is added to a run.
    assert set(got) == set(defaults)


def test_without_smoke_the_defaults_and_flags_stand():
    defaults = dict(RUN_DEFAULTS, epochs=1000, batch_size=512)
    got = resolve(defaults, _options(smoke=False, batch_size=64), False)
    # recipes/common.py help: --log_every_steps "default 500", --checkpoint_every_steps 5000.
    assert (got["log_every_steps"], got["checkpoint_every_steps"]) == (500, 5000)
    assert (got["epochs"], got["batch_size"], got["num_train_examples"]) == (1000, 64, None)
    assert got["mock_data"] is False and got["require_data"] is True


def test_the_recipe_settings_take_every_smoke_value():
    """Each value smoke_overrides names reaches the resolved recipe settings (none is
    computed, and then forgotten, somewhere else)."""
    for s, method in ((funmatch_settings(RECIPE, _options(preset="cross")), "funmatch"),
                      (self_distill_settings(SelfDistillRecipe(), _options()), "self_distill")):
        for key, value in smoke_overrides(method).items():
            assert s[key] == value, (method, key)
    real = funmatch_settings(RECIPE, _options(smoke=False, preset="cross"))
    assert (real["image_size"], real["teacher_image_size"]) == (128, 384)  # pets: 128 px
    assert real["teacher"] == "bit_r152x2.funmatch_teacher_pets_128"
