"""A card's evaluation preprocessing as data: what ``kdzoo.evaluate`` and a user's own
loop need to reproduce the card's top-1 (timm's ``pretrained_cfg``, where Keras has
no convention).

Every :func:`kdzoo.model_info` dict carries

* ``eval_preprocessing``: the ops in order, ``"resize_small(R)|central_crop(S)"``
  (big_vision's names: the shorter side resized to ``R``, then the central ``S`` x
  ``S`` crop; :func:`kdzoo.data.eval_preprocess` runs it);
* ``interpolation``: the resize's method (``"area"``, as big_vision's ``resize_small``
  and every kdzoo run);
* ``value_range``: ``[0, 255]``: zoo models take raw pixels and rescale themselves, so
  the preprocessing never divides by 255;
* ``eval_preprocessing_source``: where the protocol comes from.

A card may state ``eval_preprocessing`` / ``interpolation`` itself (checked here);
otherwise they follow the card's dataset spec (``eval_resize_small`` scaled to the
card's ``input_size``: 256 at 224 px on ImageNet, 160 at 128 px on pets), and a
dataset without a spec (imagenet21k's upstream checkpoints, bare architectures) gets
the central square at ``input_size``.
"""

import re

VALUE_RANGE = [0, 255]
INTERPOLATION = "area"
# tf.image.resize's methods, the ones eval_preprocess can run.
INTERPOLATIONS = ("area", "bilinear", "bicubic", "nearest", "lanczos3", "lanczos5",
                  "gaussian", "mitchellcubic")
_PROTOCOL = re.compile(r"^resize_small\((\d+)\)\|central_crop\((\d+)\)$")


def protocol_text(resize_small, crop):
    """``resize_small(R)|central_crop(S)``, the form cards and run summaries use."""
    return f"resize_small({int(resize_small)})|central_crop({int(crop)})"


def parse_protocol(text, where="eval_preprocessing"):
    """``(resize_small, crop)`` of ``"resize_small(R)|central_crop(S)"``, R >= S >= 1.

    Anything else raises a ValueError naming ``where`` and the accepted form, never
    a guess: a protocol read wrongly moves top-1 by points without an error.
    """
    found = _PROTOCOL.match(text.replace(" ", "")) if isinstance(text, str) else None
    if not found:
        raise ValueError(f"{where}: {text!r} is not an evaluation protocol kdzoo can "
                         "run; write 'resize_small(R)|central_crop(S)' with whole pixel "
                         "counts R >= S, e.g. 'resize_small(256)|central_crop(224)'.")
    resize_small, crop = int(found.group(1)), int(found.group(2))
    if crop < 1 or resize_small < crop:
        raise ValueError(f"{where}: {text!r} crops {crop} px out of a shorter side of "
                         f"{resize_small} px; R must be >= S >= 1.")
    return resize_small, crop


def _spec_for(dataset):
    """The kdzoo spec of a card's dataset, named by kdzoo or by TFDS, else None."""
    from kdzoo.data.specs import SPECS
    if not dataset:
        return None
    for spec in SPECS.values():
        if dataset in (spec.name, spec.tfds_name):
            return spec
    return None


def card_preprocessing(card):
    """``{eval_preprocessing, interpolation, value_range, eval_preprocessing_source}``."""
    name, size = card.get("name"), int(card["input_size"])
    where = f"Model card {name!r} ({card.get('card_file', 'no file')})"
    interpolation = card.get("interpolation", INTERPOLATION)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"{where}: interpolation {interpolation!r} is not one of "
                         f"{', '.join(INTERPOLATIONS)}.")
    if card.get("eval_preprocessing") is not None:
        resize_small, crop = parse_protocol(card["eval_preprocessing"],
                                            f"{where} eval_preprocessing")
        source = "the card"
    else:
        spec = _spec_for(card.get("dataset"))
        crop = size
        if spec is not None:
            resize_small = round(spec.eval_resize_small * size / spec.input_size)
            source = (f"the {spec.name} spec: resize_small {spec.eval_resize_small} at "
                      f"{spec.input_size} px, scaled to {size} px")
        else:
            resize_small = size
            source = (f"no evaluation spec for dataset {card.get('dataset')!r}: the "
                      f"central square at {size} px")
    return {"eval_preprocessing": protocol_text(resize_small, crop),
            "interpolation": interpolation, "value_range": list(VALUE_RANGE),
            "eval_preprocessing_source": source}
