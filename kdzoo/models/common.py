"""Conventions every zoo model follows, so exits and feature losses can find stages.

* Inputs are raw pixels in [0, 255] (float or uint8); each model rescales them
  itself with a layer named ``preprocess``, so nobody has to guess an input range.
* The output of section ``i`` (1-based) passes through an identity layer named
  ``stage{i}``; :func:`stage_outputs` finds them.
* The classifier is a Dense layer named ``head``; ``include_top=False`` drops it
  (and, following ``keras.applications``, the global pooling unless
  ``pooling="avg"`` or ``"max"`` is asked for).
"""

import re

import keras

STAGE_PATTERN = re.compile(r"^stage(\d+)$")


def stage_marker(x, index):
    """Tag ``x`` as the output of section ``index`` (an identity layer named stage{index})."""
    return keras.layers.Identity(name=f"stage{index}")(x)


def stage_names(model):
    """Names of the model's stage-output layers, shallow to deep."""
    found = []
    for layer in model.layers:
        match = STAGE_PATTERN.match(layer.name)
        if match:
            found.append((int(match.group(1)), layer.name))
    return [name for _, name in sorted(found)]


def stage_outputs(model):
    """``{"stage1": tensor, ...}``: the symbolic stage outputs of a functional model."""
    names = stage_names(model)
    if not names:
        raise ValueError(
            f"Model {model.name!r} has no stage-output layers (layers named 'stage1', "
            "'stage2', ...). Build it with kdzoo.load(...) or name the section outputs "
            "explicitly when you pass exits=[...]."
        )
    return {name: model.get_layer(name).output for name in names}


def classifier_top(x, num_classes, include_top, pooling, classifier_activation=None):
    """Pooling + the ``head`` Dense layer, with keras.applications' include_top/pooling rules."""
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return keras.layers.Dense(
            num_classes, activation=classifier_activation, name="head"
        )(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    if pooling is not None:
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}.")
    return x


def image_input(input_shape, name="image"):
    """The model's input: raw pixels in [0, 255]."""
    return keras.Input(shape=tuple(input_shape), name=name)
