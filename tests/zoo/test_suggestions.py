"""Did-you-mean for model names ranks what a user means first (issue 27), and a bare
architecture's error never lists an empty set of checkpoints."""

import re

import pytest

import kdzoo
from kdzoo.zoo.suggest import suggest


def _suggested(name):
    with pytest.raises(ValueError) as info:
        kdzoo.load(name)
    return re.findall(r"'([^']+)'", str(info.value).split("Did you mean", 1)[1].split("?")[0])


def test_resnet50_suggests_the_imagenet_checkpoint_before_the_cifar_net():
    names = _suggested("resnet50")
    assert names[0] == "resnet50_funmatch_imagenet", names
    assert names.index("resnet50_funmatch_imagenet") < names.index("cifar_resnet50")


def test_prefix_then_word_then_close_spelling():
    names = ["alpha_beta", "beta_gamma", "bta", "zeta"]
    assert suggest("beta", names) == ["beta_gamma", "alpha_beta", "bta"]
    assert suggest("qqqq", names) == []


def test_a_typo_still_reaches_the_close_spelling():
    assert suggest("resnet50_funmach_imagenet", kdzoo.list_models())[0] == \
        "resnet50_funmatch_imagenet"
    assert set(suggest("bit_r50x2", kdzoo.list_models())[:2]) == {"bit_r50x1", "bit_r50x3"}


def test_architecture_without_checkpoints_never_prints_an_empty_list():
    assert kdzoo.model_info("cifar_resnet50")["checkpoints"] == []
    with pytest.raises(ValueError) as info:
        kdzoo.load("cifar_resnet50")
    message = str(info.value)
    assert "[]" not in message
    assert "no published checkpoint" in message and "weights=None" in message


def test_architecture_with_checkpoints_lists_them():
    with pytest.raises(ValueError, match=r"'bit_r50x1\.funmatch_in1k_224'"):
        kdzoo.load("bit_r50x1")
