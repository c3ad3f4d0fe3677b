"""Model card files and downloads: one broken card file, unsafe names, trust on first use.

* A card file that is not valid JSON is left out (with a warning): other models still
  load, and loading the broken one names the file.
* Card names (and the file name at the end of a card's url) become file names under
  ``$KERAS_HOME/kdzoo``: anything but a plain name (``../../../escape``) is refused
  before a byte is written.
* A card without a sha256 (every downloadable BiT card): the first download's digest
  and size are recorded beside it, and a cached file that no longer matches is refused.
"""

import hashlib
import json
import os
import shutil

import pytest

import kdzoo
from kdzoo.zoo import download_cache, registry
from kdzoo.errors import DownloadError, ModelCardError

GOOD = "fmnist_cnn_w16.kdzoo_small_funmatch"


@pytest.fixture
def cards_dir(tmp_path, monkeypatch):
    """A private cards folder holding one good shipped card (and its weights)."""
    folder = tmp_path / "cards"
    folder.mkdir()
    shipped = registry.cards()[GOOD]
    shutil.copy(shipped["card_file"], folder)
    shutil.copy(os.path.join(registry.CARDS_DIR, shipped["file"]), folder)
    monkeypatch.setattr(registry, "CARDS_DIR", str(folder))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home" / "keras"))
    registry.cards.cache_clear()
    yield folder
    registry.cards.cache_clear()


def _card(tmp_path, name, payload=b"not really a checkpoint\n", url_name="w.npz"):
    source = tmp_path / "served" / url_name
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(payload)
    card = {k: None for k in registry.REQUIRED_CARD_KEYS}
    card.update(name=name, architecture="bit_r50x1", dataset="imagenet2012", num_classes=10,
                input_size=32, format="bit_npz", url="file://" + str(source), aliases=[])
    return card


def _all_files(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


def test_a_broken_card_file_names_itself_and_leaves_the_others_usable(cards_dir):
    broken = cards_dir / "bit_r50x1.broken.json"
    broken.write_text('{"name": "bit_r50x1.broken", "architecture": ')  # cut short
    with pytest.warns(UserWarning, match="bit_r50x1.broken.json"):
        names = kdzoo.list_models()
    assert GOOD in names and "bit_r50x1.broken" not in names
    model = kdzoo.load(GOOD)  # the good card still loads its shipped weights
    assert model.output.shape[-1] == 10
    with pytest.raises(ModelCardError, match=r"bit_r50x1\.broken\.json.*JSON"):
        kdzoo.load("bit_r50x1.broken")


def test_a_card_whose_name_is_a_path_is_refused(cards_dir, tmp_path):
    card = _card(tmp_path, "../../../escape")
    (cards_dir / "escape.json").write_text(json.dumps(card))
    with pytest.warns(UserWarning, match="escape.json"):
        assert "../../../escape" not in registry.cards()
    with pytest.raises(ModelCardError, match="not a plain name"):
        kdzoo.load("escape")
    with pytest.raises(ValueError):
        kdzoo.load("../../../escape")


@pytest.mark.parametrize("name", ["../../../escape", "a/../../b"])
def test_download_paths_never_leave_the_cache(cards_dir, tmp_path, name):
    card = _card(tmp_path, name)
    home = tmp_path / "home"
    with pytest.raises(ModelCardError, match="not a plain name"):
        download_cache.download(card)
    assert [p for p in _all_files(tmp_path) if "served" not in p
            and not p.startswith(str(cards_dir))] == []  # nothing written anywhere
    assert not home.exists() or _all_files(home) == []


def test_a_download_without_card_digest_is_recorded_and_checked_later(cards_dir, tmp_path):
    payload = b"first download bytes\n" * 100
    card = _card(tmp_path, "bit_r50x1.tofu", payload)
    target = download_cache.download(card)
    record_file = target + ".first_download.json"
    record = json.loads(open(record_file).read())
    assert record["sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["size_bytes"] == len(payload)
    assert download_cache.download(card) == target  # unchanged: used again
    with open(target, "r+b") as f:  # same size, one byte altered
        f.seek(5)
        f.write(b"X")
    with pytest.raises(DownloadError, match="changed since it was first downloaded") as info:
        download_cache.download(card)
    assert target in str(info.value) and record_file in str(info.value)
    assert os.path.exists(target)  # refused, not silently replaced
