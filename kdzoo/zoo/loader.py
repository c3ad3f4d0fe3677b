"""``kdzoo.load``: a name (and optionally weights) -> a plain ``keras.Model``.

Published checkpoints are downloaded once with ``keras.utils.get_file`` (cached
under ``$KERAS_HOME/kdzoo``), converted once to Keras ``.weights.h5`` (written
to a temporary file, then renamed, so a crash never leaves half a file, with its
sha256 beside it), and loaded from that cache afterwards; each cache entry has
a lock, so parallel first loads share one download (:mod:`kdzoo.zoo.download_cache`).
A cached file that fails its sha256 (truncated, corrupt, or its conversion was
interrupted) is rebuilt; a download that fails its card's sha256 is deleted,
never kept.

Loading never executes code from a file: ``.npz`` files are read with
``allow_pickle=False`` and ``.keras`` files in Keras safe mode.
"""

import contextlib
import difflib
import numbers
import os
import zipfile

import keras
import numpy as np

from kdzoo.zoo import registry
from kdzoo.errors import ModelCardError
from kdzoo.train.checkpointing import non_finite_weights
from kdzoo.zoo.convert.bit_npz import checkpoint_num_classes, read_npz, assign_bit_weights
from kdzoo.zoo.convert.headers import check_keras_archive, check_weights_file
from kdzoo.zoo.download_cache import cache_root, sha256_of  # noqa: F401  (public helpers)
from kdzoo.zoo.download_cache import pretrained_path as _pretrained_path
from kdzoo.errors import CheckpointError

try:  # keras.config.enable_unsafe_deserialization() would override safe_mode=True
    from keras.src.saving.serialization_lib import SafeModeScope as _SafeModeScope
except ImportError:  # pragma: no cover  (a Keras without it: safe_mode=True alone)
    _SafeModeScope = None


def _brief(error, limit=400):
    """An exception's message on one line, without Keras' dump of variable values."""
    text = " ".join(str(error).split()).split(" Target variable:")[0]
    return text if len(text) <= limit else text[:limit] + " ..."


def _check_finite(model, path):
    bad = non_finite_weights(model)
    if bad:
        raise CheckpointError(f"{path}: weight {bad[0]!r} holds NaN or Inf values; the file "
                              "is corrupt or comes from a diverged run. Use another "
                              "checkpoint.")


def _load_weights_file(model, path):
    """``model.load_weights(path)``; every failure is a CheckpointError naming ``path``."""
    check_weights_file(path, model)  # sizes from the HDF5 headers, before reading data
    try:
        model.load_weights(path)
    except (OSError, RuntimeError) as e:  # h5py: not HDF5, truncated, damaged structure
        raise CheckpointError(
            f"{path} is truncated or corrupt: it cannot be read as a Keras weights file "
            f"({_brief(e)}). Copy or download it again, or save it again with "
            "model.save_weights.") from e
    except Exception as e:
        raise CheckpointError(
            f"{path} does not fit {model.name}: {_brief(e)} It was saved from another "
            "architecture or class count: pass the zoo name and num_classes it was saved "
            "with.") from e
    _check_finite(model, path)


def _read_keras_model(path):
    """A ``.keras`` file as a model, in Keras safe mode: no code from the file runs."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is truncated or corrupt: a .keras file is a zip archive and this one "
            "cannot be opened as one. Copy it again, or save it again with model.save.")
    check_keras_archive(path)  # config vs stored kernels, sizes: before Keras builds it
    scope = _SafeModeScope(True) if _SafeModeScope else contextlib.nullcontext()
    try:
        with scope:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:
        if "safe_mode" in str(e):
            raise CheckpointError(
                f"{path} carries Python code (e.g. a Lambda layer's function); kdzoo loads "
                ".keras files in Keras safe mode and never runs code from a file. Rebuild "
                "the model without Lambda layers, or, only if you trust the file, load it "
                "yourself with keras.saving.load_model(path, safe_mode=False).") from e
        raise CheckpointError(
            f"{path} cannot be read as a .keras model ({type(e).__name__}: {_brief(e)}). It "
            "is truncated or corrupt (copy it or save it again with model.save), or it needs "
            "custom layers whose module is not imported.") from e


def _copy_layer_weights(source, target, path, skip=()):
    """Same-named layers' weights ``source`` -> ``target``, every shape checked first."""
    assignments, used = [], set(skip)
    for layer in target.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            values = source.get_layer(layer.name).get_weights()
        except ValueError:
            raise CheckpointError(
                f"{path} has no layer {layer.name!r}, which {target.name} needs: it holds "
                f"another architecture ({source.name}). Pass the zoo name of the model it "
                "was saved from.") from None
        got = [tuple(v.shape) for v in values]
        need = [tuple(w.shape) for w in layer.weights]
        if got != need:
            raise CheckpointError(
                f"{path}: layer {layer.name!r} has weights of shapes {got}, but "
                f"{target.name} needs {need}. It was saved from another architecture or "
                "class count: pass the zoo name and num_classes it was saved with.")
        assignments.append((layer, values))
        used.add(layer.name)
    extra = sorted(layer.name for layer in source.layers
                   if layer.weights and layer.name not in used)
    if extra:
        raise CheckpointError(
            f"{path} has {len(extra)} layer(s) with weights that {target.name} does not "
            f"have, e.g. {extra[:3]}: it holds another architecture. Pass the zoo name of "
            "the model it was saved from.")
    for layer, values in assignments:
        layer.set_weights(values)
    _check_finite(target, path)


def _head_classes(model):
    """Output units of ``model``'s Dense ``head`` layer, or None if it has none."""
    try:
        head = model.get_layer("head")
    except ValueError:
        return None
    return int(head.weights[-1].shape[-1]) if head.weights else None


def _transfer(source, target, skip=("head",)):
    """Copy every same-named layer's weights from ``source`` to ``target``."""
    for layer in target.layers:
        if layer.name in skip or not layer.weights:
            continue
        layer.set_weights(source.get_layer(layer.name).get_weights())


def _from_npz(path, arch, build, classes, card):
    """A published BiT ``.npz``; a headless one keeps the built model's head."""
    if arch.family != "bit":
        raise ValueError(f".npz checkpoints are BiT's format; {arch.name!r} is not BiT. "
                         "Pass a Keras .weights.h5 file saved from this architecture.")
    params = read_npz(path)
    ckpt_classes = checkpoint_num_classes(params) or classes
    full = build(ckpt_classes)
    if checkpoint_num_classes(params) is None:  # headless checkpoint: keep our head
        params = params.with_arrays(_head_params(full, params))
    assign_bit_weights(full, params, path=path)
    return full, ckpt_classes


def _from_weights_h5(path, arch, build, classes, card):
    """A Keras ``.weights.h5`` saved from this architecture (a checkpoint's: its classes)."""
    classes = card["num_classes"] if card else classes
    full = build(classes)
    _load_weights_file(full, path)
    return full, classes


def _from_keras(path, arch, build, classes, card):
    """A ``.keras`` model (safe mode): its layers' weights copied by name, shapes checked."""
    source = _read_keras_model(path)
    ckpt_classes = _head_classes(source) or classes
    full = build(ckpt_classes)
    _copy_layer_weights(source, full, path, skip=() if _head_classes(source) else ("head",))
    return full, ckpt_classes


# Weight file formats: the file name's ending -> reader(path, arch, build, classes, card)
# returning (model with the file's weights, its class count); ``classes`` is what the
# caller asked for (or the default). A new format is a row.
WEIGHT_FORMATS = ((".npz", _from_npz), (".weights.h5", _from_weights_h5),
                  (".keras", _from_keras))


def load(name, weights="pretrained", num_classes=None, include_top=True, input_shape=None,
         pooling=None, build_options=None):
    """Build a zoo model by name and load its weights.

    Args:
      name: an architecture (``"bit_r50x1"``), a checkpoint (``"bit_r50x1.funmatch_in1k_224"``)
        or an alias (``"resnet50_funmatch_imagenet"``); ``kdzoo.list_models()`` lists them.
        ``"hub:<preset>"`` (a keras-hub preset name or folder) is ``kdzoo.from_keras_hub``.
      weights: ``"pretrained"`` (the checkpoint's published weights), ``None`` (random init),
        or a path to a published ``.npz``, a Keras ``.weights.h5`` or a ``.keras`` model
        file. A ``.keras`` file is read in Keras safe mode (a file carrying code, such as
        a ``Lambda`` layer, is refused) and its layers' weights are copied by name into
        the architecture ``name`` after checking every shape; its own config is not
        returned (use ``keras.saving.load_model`` for that).
      num_classes: classes of the returned head; differing from the checkpoint's replaces
        the head with a zero-initialised one (BiT's fine-tuning practice).
      include_top: ``False`` returns the feature extractor (see ``pooling``).
      input_shape: defaults to the card's ``(input_size, input_size, channels)``.
      pooling: with ``include_top=False``: ``None`` (feature map), ``"avg"`` or ``"max"``.
      build_options: keyword arguments of the architecture's builder that change the
        graph but not the weights, over the card's own ``build_options`` (which follow
        the code that trained the checkpoint), e.g. ``{"stem_pool_padding": "zeros"}``
        for a FunMatch BiT as timm runs it.

    The model takes raw pixels in [0, 255] and rescales them itself. A file that is
    truncated, corrupt, unsafe or does not fit raises :class:`kdzoo.errors.CheckpointError`
    naming it; a download failing its sha256 raises :class:`kdzoo.errors.DownloadError`.
    """
    if isinstance(name, str) and name.startswith("hub:"):  # a keras-hub preset or folder
        from kdzoo.zoo.keras_hub import load_hub  # lazy: keras-hub is the optional [hub] extra
        return load_hub(name[len("hub:"):], weights=weights, num_classes=num_classes,
                        include_top=include_top, input_shape=input_shape, pooling=pooling)
    canonical = registry.resolve(name)
    card = registry.cards().get(canonical)
    arch = registry.architectures()[card["architecture"] if card else canonical]
    default_classes = card["num_classes"] if card else arch.num_classes
    size = card["input_size"] if card else arch.input_size
    input_shape = _check_input_shape(input_shape, (size, size, arch.channels))
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1
                                    or isinstance(num_classes, bool)):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")

    options = _build_options(card, build_options)

    def build(classes, top=True, pool=None):
        try:
            return arch.builder(num_classes=classes, include_top=top,
                                input_shape=input_shape, pooling=pool, **options)
        except TypeError as e:
            if not options:
                raise
            raise ValueError(f"build_options {options} do not fit architecture "
                             f"{arch.name!r} ({e}); check the card's build_options or "
                             "the build_options argument.") from None

    if weights is None:
        return build(num_classes or default_classes, include_top, pooling)
    if weights == "pretrained":
        if card is None:
            raise ValueError(_no_weights_message(canonical))
        ckpt_classes = card["num_classes"]
        path = _pretrained_path(card, lambda: build(ckpt_classes))
        full = build(ckpt_classes)
        _load_weights_file(full, path)
    elif isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.exists(path):
            close = difflib.get_close_matches(path, ["pretrained"], n=1, cutoff=0.6)
            hint = " Did you mean weights='pretrained'?" if close else ""
            raise FileNotFoundError(
                f"Weight file {path} does not exist.{hint} Pass weights='pretrained' (the "
                "published weights), None (random init) or the path of an existing .npz / "
                ".weights.h5 file.")
        reader = next((r for suffix, r in WEIGHT_FORMATS if path.endswith(suffix)), None)
        if reader is None:
            raise ValueError(f"Unsupported weight file {path}: use a published BiT .npz or a "
                             "Keras .weights.h5 file, or a .keras model file.")
        full, ckpt_classes = reader(path, arch, build, num_classes or default_classes, card)
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


def _build_options(card, override):
    """The card's ``build_options`` updated by the caller's, both checked to be dicts."""
    card_options = (card or {}).get("build_options", {})
    if not isinstance(card_options, dict):
        raise ModelCardError(f"Model card {card['name']!r}: build_options must be a JSON "
                             f"object of builder arguments, got {card_options!r}.")
    if override is not None and not isinstance(override, dict):
        raise TypeError(f"build_options must be a dict of builder arguments, got "
                        f"{override!r}.")
    return {**card_options, **(override or {})}


def _no_weights_message(arch):
    """Why ``kdzoo.load(arch)`` has no weights to load, and what to pass instead: its
    checkpoints where it has some, never an empty list of them."""
    options = registry.model_info(arch)["checkpoints"]
    if options:
        return (f"{arch!r} is an architecture without weights of its own. Pick one of its "
                f"checkpoints {options} or pass weights=None "
                "for random init.")
    return (f"{arch!r} is an architecture with no published checkpoint: pass weights=None "
            "for random init (and train it, e.g. with FunMatchDistiller), or weights=<path of "
            "a .weights.h5 / .keras file saved from it>. kdzoo.list_models(pretrained=True) "
            "lists the names that come with weights.")


def _check_input_shape(input_shape, default):
    """``(height, width, channels)`` of positive ints (None for a free height / width)."""
    if input_shape is None:
        return default
    example = f" e.g. input_shape={default}."
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if shape is None or isinstance(input_shape, str) or len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels) without the batch "
                         f"axis, got {input_shape!r};{example}")
    for i, dim in enumerate(shape):
        free = dim is None and i < 2
        if not free and (isinstance(dim, bool) or not isinstance(dim, numbers.Integral)
                         or dim < 1):
            raise ValueError(f"input_shape must hold positive ints (None allowed for height "
                             f"and width), got {input_shape!r};{example}")
    return tuple(None if d is None else int(d) for d in shape)


def _head_params(model, params):
    """Key names for ``model``'s freshly initialised head, in the checkpoint's naming."""
    kernel, bias = model.get_layer("head").get_weights()
    if any(k.startswith("resnet/") for k in params):
        return {"resnet/head/conv2d/kernel": kernel[None, None], "resnet/head/conv2d/bias": bias}
    return {"head/kernel": kernel, "head/bias": bias}
