"""Names -> architectures and pretrained model cards, with aliases and did-you-mean.

Architectures are registered in code (each ``kdzoo/models/*.py`` decorates its builders
with :func:`register`; ``kdzoo/models/__init__.py`` imports every module there).
Pretrained checkpoints are data: one JSON model card per checkpoint in the repository's
top-level ``pretrained/`` folder, which ``setup.py`` ships as ``kdzoo/pretrained`` (a
``package_dir`` mapping), so an installed kdzoo carries them too.
"""

import dataclasses
import fnmatch
import functools
import json
import os
import re
import warnings
from typing import Callable

from kdzoo.errors import ModelCardError
from kdzoo.zoo.suggest import did_you_mean
from kdzoo.zoo.preprocessing import card_preprocessing



def _cards_dir():
    """Where the model cards are: ``kdzoo/pretrained`` in an installed wheel (setup.py's
    ``package_dir`` puts them there); the top-level ``pretrained/`` beside ``kdzoo/`` in a
    source checkout or an editable install, which import ``kdzoo`` from the source tree."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # kdzoo/
    installed = os.path.join(package, "pretrained")
    return installed if os.path.isdir(installed) else os.path.join(os.path.dirname(package), "pretrained")


CARDS_DIR = _cards_dir()


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How to build one architecture.

    ``builder(num_classes=..., include_top=..., input_shape=..., pooling=..., **kwargs)``
    returns a functional ``keras.Model`` following ``kdzoo.models.common``'s conventions.
    """

    name: str
    builder: Callable
    input_size: int
    num_classes: int
    family: str
    description: str
    channels: int = 3
    reference_params: int | None = None
    reference: str | None = None


_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name, builder, *, input_size, num_classes, family,
                          description, channels=3, reference_params=None,
                          reference=None):
    """Add an architecture to the zoo (called by the model modules at import)."""
    if name in _ARCHITECTURES:
        raise ValueError(f"Architecture {name!r} is registered twice.")
    _ARCHITECTURES[name] = Architecture(
        name=name, builder=builder, input_size=input_size, num_classes=num_classes,
        family=family, description=description, channels=channels,
        reference_params=reference_params, reference=reference)
    return builder


def register(name, **meta):
    """Decorator: ``@register("cifar_vgg19_bn", input_size=32, ...)`` over a builder.

    The one way a model module adds an architecture (``meta``: the keyword
    arguments of :func:`register_architecture`). Generated families call it on
    each builder they make: ``register(name, ...)(make_builder(...))``.
    """
    def decorate(builder):
        return register_architecture(name, builder, **meta)
    return decorate


def architectures():
    """Every registered architecture by name.

    The registry never imports the model modules (that would be an import cycle: they
    import it to register). ``import kdzoo`` imports ``kdzoo.models``, and importing any
    ``kdzoo.*`` module imports the package first, so every family is registered here.
    """
    return dict(_ARCHITECTURES)


REQUIRED_CARD_KEYS = ("name", "architecture", "dataset", "num_classes", "input_size",
                      "preprocessing", "url", "format", "sha256", "size_bytes",
                      "top1", "top1_source", "license")


# A card name becomes file names under $KERAS_HOME/kdzoo: dot-separated identifiers only
# (``bit_r50x1.funmatch_in1k_224``), never a path ("../x", "a/b") or a hidden name.
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")
_BROKEN: dict[str, str] = {}  # card file stem or card name -> why that card file is unusable


def check_plain_name(name, what):
    """``name`` if it is a plain name (see ``_PLAIN_NAME``), else a ModelCardError."""
    if not isinstance(name, str) or not _PLAIN_NAME.match(name):
        raise ModelCardError(
            f"{what} {name!r} is not a plain name (letters, digits, '_', '-' and "
            "single dots between them): kdzoo turns it into file names and refuses "
            "anything that could leave its folder, such as '../' or '/'.")
    return name


def _read_card_file(path):
    """The checked cards of one card file (a ModelCardError naming ``path`` if unusable)."""
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise ModelCardError(f"Model card file {path} cannot be read as JSON "
                             f"({type(e).__name__}: {e}). Fix or remove that file.") from None
    entries = entries if isinstance(entries, list) else [entries]
    for card in entries:
        missing = [k for k in REQUIRED_CARD_KEYS if not isinstance(card, dict) or k not in card]
        if missing:
            name = card.get("name") if isinstance(card, dict) else None
            raise ModelCardError(f"Model card {name!r} in {path} lacks {missing}; fix or "
                                 "remove that file.")
        check_plain_name(card["name"], f"Model card name in {path}:")
    return entries


@functools.lru_cache(maxsize=None)
def cards():
    """``{name: card}`` for every usable JSON model card shipped in :data:`CARDS_DIR`.

    A card file that is not valid (bad JSON, missing keys, an unsafe name) is left out
    with a warning, so one bad file does not break every other model; loading the
    broken card's name raises the reason, naming the file (:func:`resolve`).
    """
    found = {}
    _BROKEN.clear()
    for fname in sorted(os.listdir(CARDS_DIR)):
        if not fname.endswith(".json"):
            continue
        path = os.path.join(CARDS_DIR, fname)
        try:
            entries = _read_card_file(path)
            for card in entries:
                if card["name"] in found:
                    raise ModelCardError(f"Model card {card['name']!r} is defined twice "
                                         f"({path} and {found[card['name']]['card_file']}).")
        except ModelCardError as e:
            _BROKEN[fname[:-len(".json")]] = str(e)
            warnings.warn(f"kdzoo skipped a model card: {e}", stacklevel=2)
            continue
        for card in entries:
            card = dict(card, card_file=path)
            card.setdefault("aliases", [])
            found[card["name"]] = card
    return found


def aliases():
    table = {}
    for card in cards().values():
        for alias in card["aliases"]:
            table[alias] = card["name"]
    return table


def all_names():
    return sorted(set(architectures()) | set(cards()) | set(aliases()))


def resolve(name):
    """Canonical name for ``name`` (an architecture, a checkpoint or an alias)."""
    if not isinstance(name, str):
        raise TypeError(f"A model name must be a string, got {type(name).__name__}.")
    if name in architectures() or name in cards():
        return name
    alias_table = aliases()
    if name in alias_table:
        return alias_table[name]
    if name in _BROKEN:
        raise ModelCardError(f"Model {name!r} cannot be loaded: {_BROKEN[name]}")
    hint = did_you_mean(name, all_names())
    raise ValueError(
        f"Unknown model name {name!r}.{hint} kdzoo.list_models() lists every name.")


def has_weights(name):
    """Whether ``kdzoo.load(name)`` (weights="pretrained") has weights to load: a card
    (or its alias) with a download url or a weights file shipped beside it."""
    card = cards().get(aliases().get(name, name))
    return bool(card and (card.get("url") or card.get("file")))


def list_models(pattern=None, pretrained=None):
    """Sorted names of architectures, checkpoints and aliases, filtered by a glob.

    ``pretrained=True`` keeps the names ``kdzoo.load(name)`` loads weights for (the
    checkpoints and their aliases); ``False`` the bare architectures, which are built
    with ``weights=None`` (random init) or from a file of your own; ``None`` all names.
    """
    if pretrained not in (None, True, False):
        raise TypeError(f"pretrained must be True, False or None (every name), got "
                        f"{pretrained!r}.")
    names = all_names()
    if pretrained is not None:
        names = [n for n in names if has_weights(n) == pretrained]
    if pattern is None:
        return names
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a glob string such as '*funmatch*' (or None for "
                        f"every name), got {pattern!r}.")
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def model_info(name):
    """The model card of a checkpoint, or a card-shaped dict for a bare architecture."""
    name = resolve(name)
    if name in cards():
        card = dict(cards()[name])
        arch = architectures()[card["architecture"]]
        card.setdefault("family", arch.family)
        card.setdefault("description", arch.description)
        card.update(card_preprocessing(card))
        return card
    arch = architectures()[name]
    bare = {
        "name": name, "aliases": [], "architecture": name, "family": arch.family,
        "description": arch.description, "dataset": None,
        "num_classes": arch.num_classes, "input_size": arch.input_size,
        "preprocessing": "raw pixels in [0, 255]; the model rescales them itself",
        "url": None, "format": None, "sha256": None, "size_bytes": None,
        "top1": None, "top1_source": None, "license": "Apache-2.0 (kdzoo code)",
        "checkpoints": sorted(n for n, c in cards().items() if c["architecture"] == name),
    }
    return dict(bare, **card_preprocessing(bare))
