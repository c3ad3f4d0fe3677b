"""``kdzoo.load``: a name (and optionally weights) -> a plain ``keras.Model``.

Published checkpoints are downloaded once with ``keras.utils.get_file`` (cached
under ``$KERAS_HOME/kdzoo``), converted once to Keras ``.weights.h5`` (written
to a temporary file, then renamed, so a crash never leaves half a file), and
loaded from that cache afterwards.
"""

import hashlib
import os

import keras
import numpy as np

from kdzoo import registry
from kdzoo.atomic import save_weights
from kdzoo.convert.bit_npz import checkpoint_num_classes, load_bit_npz, read_npz, assign_bit_weights
from kdzoo.errors import CheckpointError, DownloadError


def cache_root():
    """``$KERAS_HOME/kdzoo`` (read at call time, so tests and users can redirect it)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "kdzoo")


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(card):
    """The published file of ``card``, via keras.utils.get_file; never leaves a bad file."""
    url = card["url"]
    fname = f"{card['name']}-{os.path.basename(url)}"
    subdir = os.path.join("kdzoo", "downloads")
    target = os.path.join(cache_root(), "downloads", fname)
    try:
        return keras.utils.get_file(fname=fname, origin=url, file_hash=card["sha256"],
                                    hash_algorithm="sha256", cache_subdir=subdir,
                                    cache_dir=os.path.dirname(cache_root()))
    except Exception as e:  # network errors come as bare Exception from get_file
        if os.path.exists(target):
            os.remove(target)  # e.g. a wrong hash: never keep the bad file
        raise DownloadError(
            f"Could not fetch {url} for {card['name']!r} ({e}). Without network access, "
            f"download that file elsewhere and either pass weights='/path/to/"
            f"{os.path.basename(url)}' to kdzoo.load, or copy it to {target}.") from e


def _pretrained_path(card, build_full):
    """Local Keras weights for ``card``: shipped with kdzoo, or converted and cached."""
    if card["format"] == "keras_weights":
        path = os.path.join(registry.CARDS_DIR, card["file"])
        if not os.path.exists(path):
            raise CheckpointError(f"Weight file {path} of {card['name']!r} is missing; "
                                  "reinstall kdzoo.")
        if card["sha256"] and sha256_of(path) != card["sha256"]:
            raise CheckpointError(f"Weight file {path} does not match the sha256 in its model "
                                  f"card ({card['card_file']}); it is corrupt or was replaced.")
        return path
    if card["format"] != "bit_npz":
        raise CheckpointError(f"Model card {card['name']!r} has unknown format {card['format']!r}.")
    converted = os.path.join(cache_root(), "converted", f"{card['name']}.weights.h5")
    if os.path.exists(converted):
        return converted
    npz_path = _download(card)
    try:
        model = build_full()
        load_bit_npz(model, npz_path)
    except CheckpointError:
        os.remove(npz_path)  # the cache never keeps a file we could not use
        raise
    save_weights(model, converted)
    return converted


def _load_weights_file(model, path):
    try:
        model.load_weights(path)
    except Exception as e:
        raise CheckpointError(
            f"Could not load {path} into {model.name}: {e}. The file is truncated, corrupt, or "
            "was saved from another architecture or class count.") from e


def _transfer(source, target, skip=("head",)):
    """Copy every same-named layer's weights from ``source`` to ``target``."""
    for layer in target.layers:
        if layer.name in skip or not layer.weights:
            continue
        layer.set_weights(source.get_layer(layer.name).get_weights())


def load(name, weights="pretrained", num_classes=None, include_top=True, input_shape=None,
         pooling=None):
    """Build a zoo model by name and load its weights.

    Args:
      name: an architecture (``"bit_r50x1"``), a checkpoint (``"bit_r50x1.funmatch_in1k_224"``)
        or an alias (``"resnet50_funmatch_imagenet"``); ``kdzoo.list_models()`` lists them.
      weights: ``"pretrained"`` (the checkpoint's published weights), ``None`` (random init),
        or a path to a published ``.npz`` or a Keras ``.weights.h5`` file.
      num_classes: classes of the returned head; differing from the checkpoint's replaces
        the head with a zero-initialised one (BiT's fine-tuning practice).
      include_top: ``False`` returns the feature extractor (see ``pooling``).
      input_shape: defaults to the card's ``(input_size, input_size, channels)``.
      pooling: with ``include_top=False``: ``None`` (feature map), ``"avg"`` or ``"max"``.

    The model takes raw pixels in [0, 255] and rescales them itself.
    """
    canonical = registry.resolve(name)
    card = registry.cards().get(canonical)
    arch = registry.architectures()[card["architecture"] if card else canonical]
    default_classes = card["num_classes"] if card else arch.num_classes
    size = card["input_size"] if card else arch.input_size
    input_shape = tuple(input_shape) if input_shape is not None else (size, size, arch.channels)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")

    def build(classes, top=True, pool=None):
        return arch.builder(num_classes=classes, include_top=top, input_shape=input_shape,
                            pooling=pool)

    if weights is None:
        return build(num_classes or default_classes, include_top, pooling)
    if weights == "pretrained":
        if card is None:
            options = registry.model_info(canonical)["checkpoints"]
            raise ValueError(
                f"{canonical!r} is an architecture without weights of its own. Pick one of its "
                f"checkpoints {options} or pass weights=None for random init.")
        ckpt_classes = card["num_classes"]
        path = _pretrained_path(card, lambda: build(ckpt_classes))
        full = build(ckpt_classes)
        _load_weights_file(full, path)
    elif isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.exists(path):
            raise FileNotFoundError(f"Weight file {path} does not exist.")
        if path.endswith(".npz"):
            if arch.family != "bit":
                raise ValueError(f".npz checkpoints are BiT's format; {arch.name!r} is not BiT.")
            params = read_npz(path)
            ckpt_classes = checkpoint_num_classes(params) or num_classes or default_classes
            full = build(ckpt_classes)
            if checkpoint_num_classes(params) is None:  # headless checkpoint: keep our head
                params = dict(params, **_head_params(full, params))
            assign_bit_weights(full, params, path=path)
        elif path.endswith(".weights.h5"):
            ckpt_classes = default_classes if card else (num_classes or default_classes)
            full = build(ckpt_classes)
            _load_weights_file(full, path)
        else:
            raise ValueError(f"Unsupported weight file {path}: use a published BiT .npz or a "
                             "Keras .weights.h5 file.")
    else:
        raise TypeError(f"weights must be 'pretrained', None or a file path, got {weights!r}.")

    if include_top and pooling is None and num_classes in (None, ckpt_classes):
        return full
    model = build(num_classes or ckpt_classes, include_top, pooling)
    _transfer(full, model)
    if include_top:
        head = model.get_layer("head")
        head.set_weights([np.zeros(w.shape, w.dtype) for w in head.get_weights()])
    return model


def _head_params(model, params):
    """Key names for ``model``'s freshly initialised head, in the checkpoint's naming."""
    kernel, bias = model.get_layer("head").get_weights()
    if any(k.startswith("resnet/") for k in params):
        return {"resnet/head/conv2d/kernel": kernel[None, None], "resnet/head/conv2d/bias": bias}
    return {"head/kernel": kernel, "head/bias": bias}
