"""keras-hub image models as kdzoo models: ``from_keras_hub`` and ``kdzoo.load("hub:...")``.

keras-hub keeps preprocessing *outside* the model: ``ImageClassifier.__call__``
expects pixels its ``preprocessor`` already resized and scaled (for ImageNet
ResNets ``(x / 255 - mean) / std``). A hub classifier handed as is to a
distiller, which feeds raw [0, 255] pixels, runs on the wrong value range and
says nothing. ``from_keras_hub`` puts the preset's own preprocessing into the
graph, so the result takes raw pixels like every zoo model
(:mod:`kdzoo.models.common`):

* ``resize``: a stock ``keras.layers.Resizing`` with the image converter's size,
  interpolation, crop/pad-to-aspect-ratio and antialias settings (skipped when
  the converter has no image size), called with ``training=False`` so that its
  ``training=True`` default does not put the layers after it in training mode
  when the model is called without a flag;
* ``preprocess``: a stock ``keras.layers.Rescaling`` with the converter's scale and
  offset (scalars or per channel), applied after the resize as keras-hub does;
* the hub graph flattened into this model (the backbone's layers keep their own
  names and become top-level layers, so ``SelfDistillation(exits=[...])`` can name
  them), identity layers ``stage1`` .. ``stageN`` on the backbone's feature-pyramid
  levels (the last one is the backbone's output), the hub head, and the classifier
  as a Dense layer named ``head`` returning logits.

The result holds copies of the hub model's layers (config and weights): training
it leaves the hub model as it was. It is built from stock Keras layers wherever the
hub architecture is (ResNet is), so ``kdzoo.to_plain_keras`` works on it too.
"""

import difflib
import os

import keras
import numpy as np

from kdzoo.models.common import stage_marker, stage_names

__all__ = ["from_keras_hub", "load_hub"]

_INSTALL = 'pip install -e ".[cpu,hub]" (or pip install "keras-hub>=0.32")'


def _keras_hub():
    try:
        import keras_hub
    except ImportError as e:
        raise ImportError(f"from_keras_hub / kdzoo.load('hub:...') need keras-hub: {_INSTALL}."
                          ) from e
    return keras_hub


def _check_classes(num_classes):
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None (keep the preset's "
                         f"head), got {num_classes!r}.")


def _unknown_preset(preset, hub, error):
    names = sorted(hub.models.ImageClassifier.presets)
    close = difflib.get_close_matches(preset, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(
        f"preset_or_model={preset!r} is neither a keras-hub preset nor a preset folder "
        f"(keras-hub: {str(error).splitlines()[0]}).{hint} Pass a built-in name from "
        "keras_hub.models.ImageClassifier.presets (e.g. 'resnet_50_imagenet'), a "
        "kaggle:// or hf:// handle, or a folder written by save_to_preset.")


def _from_preset(preset, num_classes, load_weights=True):
    """An ``ImageClassifier`` (with its preprocessor) from a preset name or folder."""
    hub = _keras_hub()
    try:
        return hub.models.ImageClassifier.from_preset(preset, load_weights=load_weights)
    except TypeError as e:  # a backbone preset: no task.json, so no head and no classes
        if "num_classes" not in str(e):
            raise
        if num_classes is None:
            raise ValueError(
                f"Preset {preset!r} is a backbone without a classifier head: pass "
                "num_classes=... for the new head.") from None
    except FileNotFoundError as e:
        raise ValueError(_preprocessing_missing(repr(preset), str(e))) from e
    except ValueError as e:
        text = str(e)
        if "Unknown preset identifier" in text:
            raise _unknown_preset(preset, hub, e) from None
        if "Unable to find a subclass" in text:
            raise ValueError(
                f"Preset {preset!r} is not an image model: {text} from_keras_hub takes "
                "keras-hub image classifiers and image backbones (ResNet, EfficientNet, "
                "MobileNet, ViT, ...).") from None
        raise
    try:
        return hub.models.ImageClassifier.from_preset(preset, num_classes=num_classes,
                                                      load_weights=load_weights)
    except FileNotFoundError as e:
        raise ValueError(_preprocessing_missing(repr(preset), str(e))) from e


def _preprocessing_missing(what, detail):
    return (f"{what} carries no image preprocessing ({detail}), so the pixel value range "
            "it was trained on is unknown and kdzoo will not guess it. Give the classifier "
            "a preprocessor, e.g. keras_hub.models.ImageClassifier(backbone, num_classes, "
            "preprocessor=keras_hub.models.ImageClassifierPreprocessor("
            "keras_hub.layers.ImageConverter(image_size=(224, 224), scale=1 / 255))).")


def _check_model(model):
    hub = _keras_hub()
    if isinstance(model, hub.models.ImageClassifier):
        converter = getattr(model.preprocessor, "image_converter", None)
        if converter is None:
            raise ValueError(_preprocessing_missing(
                f"ImageClassifier {model.name!r}", "its preprocessor or image converter "
                "is None"))
        if getattr(converter, "data_format", "channels_last") != "channels_last":
            raise ValueError(f"ImageClassifier {model.name!r} is channels_first; kdzoo "
                             "models are channels_last. Rebuild it with "
                             "data_format='channels_last'.")
        return model
    if isinstance(model, hub.models.Backbone):
        raise TypeError(
            f"preset_or_model is a bare {type(model).__name__}: it has neither a head nor "
            "preprocessing, so the value range is unknown. Pass its preset name or "
            "folder with num_classes=..., or wrap it: keras_hub.models.ImageClassifier("
            "backbone, num_classes, preprocessor=...).")
    raise TypeError(
        f"preset_or_model must be a keras-hub preset (name or folder) or a "
        f"keras_hub.models.ImageClassifier, got {type(model).__name__} "
        f"{getattr(model, 'name', '')!r}. A keras-hub model of another task (text, "
        "detection, ...) is not an image classifier; kdzoo zoo models need no wrapping.")


def _stage_tensors(backbone):
    """The backbone's pyramid levels, shallow to deep, ending with its output."""
    levels = getattr(backbone, "pyramid_outputs", None) or {}
    ordered = [levels[k] for k in sorted(levels, key=lambda k: int(str(k).lstrip("P")))]
    ordered = [t for t in ordered if t is not backbone.output]
    return ordered + [backbone.output]


def _new_head(dense, num_classes):
    """The hub classifier as a linear Dense named ``head`` (its weights, or a zero head)."""
    config = dict(dense.get_config(), name="head", activation=None)
    replace = num_classes is not None and num_classes != dense.units
    if replace:
        config["units"] = num_classes
    head = keras.layers.Dense.from_config(config)
    head.build((None, dense.kernel.shape[0]))
    head.set_weights([np.zeros(w.shape, w.dtype) for w in head.get_weights()] if replace
                     else dense.get_weights())
    return head


def _flatten(classifier, x, num_classes):
    """``classifier``'s graph applied to ``x`` with its backbone inlined; its logits."""
    backbone, dense = classifier.backbone, classifier.output_dense
    stage_of = {id(t._keras_history.operation): i
                for i, t in enumerate(_stage_tensors(backbone), start=1)}
    head, copies = _new_head(dense, num_classes), {}

    def in_backbone(layer, *args, **kwargs):  # the main path runs through the markers
        out = _copy_call(layer, copies, args, kwargs)
        return stage_marker(out, stage_of[id(layer)]) if id(layer) in stage_of else out

    def in_classifier(layer, *args, **kwargs):
        if layer is backbone:  # inline: its layers become this model's own
            return backbone._run_through_graph(args[0], call_fn=in_backbone)
        if layer is dense:
            return head(*args, **kwargs)
        return _copy_call(layer, copies, args, kwargs)

    return classifier._run_through_graph(x, call_fn=in_classifier)


def _copy_call(op, copies, args, kwargs):
    """``op`` applied to the new tensors, a layer as a copy (its config and weights).

    Copies, not the hub layers themselves: a reused layer's ``.output`` stays the
    tensor of the hub graph it was first called in (which ``SelfDistillation``
    would read for an exit), and training the result must not train the model
    passed in. Graphs are walked with ``Function._run_through_graph``: what
    ``keras.models.clone_model(input_tensors=...)`` does inside, without the
    Functional wrapper it builds around an intermediate tensor (two of those on
    one tensor clash: "name ... is used 2 times").
    """
    if not isinstance(op, keras.layers.Layer):  # a keras.ops call: stateless
        return op(*args, **kwargs)
    if id(op) not in copies:
        copies[id(op)] = (op, op.__class__.from_config(op.get_config()))
    source, copy = copies[id(op)]
    out = copy(*args, **kwargs)
    copy.set_weights(source.get_weights())
    copy.trainable = source.trainable
    return out


def from_keras_hub(preset_or_model, num_classes=None, input_shape=None, load_weights=True,
                   name=None):
    """A keras-hub image classifier as a plain ``keras.Model`` taking raw [0, 255] pixels.

    Args:
      preset_or_model: a keras-hub preset (built-in name such as
        ``"resnet_50_imagenet"``, a ``kaggle://`` / ``hf://`` handle, or a folder
        written by ``save_to_preset``) or a ``keras_hub.models.ImageClassifier``
        that has a preprocessor (its image converter gives size and value range).
      num_classes: ``None`` keeps the preset's head; another count replaces it with
        a zero-initialised Dense ``head`` (as ``kdzoo.load`` does). Required for a
        backbone-only preset.
      input_shape: ``(height, width, channels)`` of the raw images; default
        ``(None, None, channels)``: any size, resized in the graph to the preset's.
      load_weights: ``False`` builds the preset's architecture with random weights.
      name: the returned model's name (default: the hub model's).

    Returns a functional model (logits out, any head activation dropped) usable as
    a FunMatch teacher or student, a ``SelfDistillation`` backbone (stages
    ``stage1..N``; any backbone layer name works in ``exits=``) and by
    ``kdzoo.to_plain_keras``.
    """
    _check_classes(num_classes)
    if isinstance(preset_or_model, (str, os.PathLike)):
        classifier = _from_preset(os.fspath(preset_or_model), num_classes, load_weights)
    else:
        classifier = preset_or_model
    classifier = _check_model(classifier)
    converter = classifier.preprocessor.image_converter
    channels = classifier.backbone.input_shape[-1]
    shape = tuple(input_shape) if input_shape is not None else (None, None, channels)
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    if converter.image_size is not None:
        config = converter.resizing.get_config()
        config = {k: config[k] for k in ("height", "width", "interpolation",
                                         "crop_to_aspect_ratio", "pad_to_aspect_ratio",
                                         "antialias") if k in config}
        # training=False recorded on the node: Resizing is an augmentation-style layer
        # whose call() defaults to training=True, and a layer's resolved flag becomes
        # the call context of every layer after it. Without it, model(x) with no flag
        # ran every BatchNormalization in training mode (batch statistics, moving
        # statistics updated in eager calls). model(x, training=True) still overrides it.
        x = keras.layers.Resizing(name="resize", **config)(x, training=False)
    scale = 1.0 if converter.scale is None else converter.scale
    offset = 0.0 if converter.offset is None else converter.offset
    x = keras.layers.Rescaling(scale, offset=offset, name="preprocess")(x)
    logits = _flatten(classifier, x, num_classes)
    return keras.Model(inputs, logits, name=name or classifier.name)


def load_hub(preset, weights="pretrained", num_classes=None, include_top=True,
             input_shape=None, pooling=None):
    """``kdzoo.load("hub:<preset>", ...)``: :func:`from_keras_hub` by name."""
    if weights not in ("pretrained", None):
        raise ValueError(
            f"kdzoo.load('hub:{preset}') takes weights='pretrained' or None, got "
            f"{weights!r}; a local preset is named by its folder: "
            "kdzoo.load('hub:/path/to/preset').")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}.")
    model = from_keras_hub(preset, num_classes=num_classes, input_shape=input_shape,
                           load_weights=weights == "pretrained")
    if include_top:
        return model
    x = model.get_layer(stage_names(model)[-1]).output
    if pooling:
        pool = {"avg": keras.layers.GlobalAveragePooling2D,
                "max": keras.layers.GlobalMaxPooling2D}[pooling]
        x = pool(name=f"{pooling}_pool")(x)
    return keras.Model(model.inputs, x, name=model.name)
