"""``kdzoo.list_models(pattern, pretrained)``: which names have weights to load.

The expected names come from the card JSON files themselves (read here, not through
the registry) and from the architecture registry: a card counts as pretrained when it
has a download ``url`` or a shipped weights ``file``; its aliases go with it. Every
other name is a bare architecture, built with random weights.
"""

import fnmatch
import glob
import json
import os

import pytest

import kdzoo
from kdzoo.zoo import registry

CARDS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "pretrained")


def _card_entries():
    """Every card in ``pretrained/*.json`` (a file holds one card or a list of them)."""
    entries = []
    for path in sorted(glob.glob(os.path.join(CARDS_DIR, "*.json"))):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        entries.extend(data if isinstance(data, list) else [data])
    return entries


def _expected():
    """(pretrained names, bare names) as the card files and architectures say."""
    with_weights, without = set(), set()
    for card in _card_entries():
        names = {card["name"], *card.get("aliases", [])}
        (with_weights if card.get("url") or card.get("file") else without).update(names)
    return with_weights, without | set(registry.architectures())


def test_card_files_are_found():
    # Guards the rest: an empty pretrained/ folder would make every set below empty.
    with_weights, _ = _expected()
    assert len(_card_entries()) >= 20
    assert "bit_r50x1.funmatch_in1k_224" in with_weights
    assert "resnet50_funmatch_imagenet" in with_weights  # an alias of that card


def test_pretrained_true_is_exactly_the_cards_with_weights():
    with_weights, _ = _expected()
    assert kdzoo.list_models(pretrained=True) == sorted(with_weights)


def test_pretrained_false_is_exactly_the_bare_names():
    _, bare = _expected()
    got = kdzoo.list_models(pretrained=False)
    assert got == sorted(bare)
    assert "bit_r50x1" in got and "fmnist_cnn_w16" in got
    assert not any("." in n for n in got)  # no checkpoint name (those are dotted)


def test_true_and_false_partition_every_name():
    every = kdzoo.list_models()
    yes = kdzoo.list_models(pretrained=True)
    no = kdzoo.list_models(pretrained=False)
    assert not set(yes) & set(no)
    assert sorted(yes + no) == every
    assert kdzoo.list_models(pretrained=None) == every


@pytest.mark.parametrize("pattern", ["bit_r50x1*", "fmnist_cnn_w16*", "bit_r152x?*"])
def test_pattern_and_pretrained_filter_together(pattern):
    with_weights, bare = _expected()
    yes = kdzoo.list_models(pattern, pretrained=True)
    no = kdzoo.list_models(pattern, pretrained=False)
    assert yes == sorted(n for n in with_weights if fnmatch.fnmatchcase(n, pattern))
    assert no == sorted(n for n in bare if fnmatch.fnmatchcase(n, pattern))
    assert yes and no  # each pattern picks both kinds, so both filters are exercised
    assert sorted(yes + no) == kdzoo.list_models(pattern)


def test_pattern_of_checkpoints_only_leaves_no_bare_name():
    # No architecture is named "*funmatch*": pretrained=False must not let a card through.
    assert kdzoo.list_models("*funmatch*", pretrained=False) == []
    assert "resnet50_funmatch_imagenet" in kdzoo.list_models("*funmatch*", pretrained=True)


@pytest.mark.parametrize("bad", ["yes", "True", "pretrained", [True]])
def test_non_bool_pretrained_is_refused(bad):
    with pytest.raises(TypeError, match=r"pretrained must be True, False or None"):
        kdzoo.list_models(pretrained=bad)
