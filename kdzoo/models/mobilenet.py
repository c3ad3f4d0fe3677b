"""MobileNetV3 Small / Large (Howard et al. 2019) from ``keras.applications``.

The paper's students "of another family" (Beyer et al. 2022, sec. 5). We reuse
the ``keras.applications`` graph and re-wire it to follow
:mod:`kdzoo.models.common`'s conventions:

* raw pixels in [0, 255] go in; the first layer, named ``preprocess``, maps
  them to [-1, 1] (what ``keras.applications`` MobileNetV3 expects);
* identity layers ``stage1`` .. ``stage4`` mark the outputs of the sections at
  strides 4, 8, 16 and 32 (the last one after the final 1x1 conv);
* the top is global average pooling, the 1x1 "last point" projection of
  MobileNetV3 (1024 / 1280 units, hard-swish) applied as a Dense layer named
  ``last_point``, dropout, and the Dense classifier ``head`` (logits);
* ``bn_momentum`` (default: keras.applications' 0.999) replaces every batch norm's
  moving-average momentum. 0.999 averages over ~1,000 steps: a from-scratch run of a
  few thousand steps ends with moving statistics that lag the weights so far that
  inference collapses to one class (measured on Fashion-MNIST, MobileNetV3-Small at
  32 px, 2,344 steps: 10.0 % test top-1, 81-83 % once the statistics are recomputed
  on 1,000 training images); short runs want e.g. 0.9.

Only ``weights=None``: these machines have no network, and ImageNet weights
from ``keras.applications`` would not match the re-wired top anyway.
"""

import keras

from kdzoo.models import common
from kdzoo.zoo.registry import register

# Block outputs that end the sections at strides 4, 8 and 16 (stride 32 is the
# backbone's output). Names are fixed by keras.applications' MobileNetV3 code.
_STAGE_LAYERS = {
    "small": ("expanded_conv_project_bn", "expanded_conv_2_add", "expanded_conv_7_add"),
    "large": ("expanded_conv_2_add", "expanded_conv_5_add", "expanded_conv_11_add"),
}
_LAST_POINT = {"small": 1024, "large": 1280}
_APPLICATION = {
    "small": keras.applications.MobileNetV3Small,
    "large": keras.applications.MobileNetV3Large,
}


def _build(size, num_classes=1000, include_top=True, input_shape=(224, 224, 3),
           pooling=None, weights=None, alpha=1.0, minimalistic=False,
           dropout_rate=0.2, classifier_activation=None, bn_momentum=None, name=None):
    if weights is not None:
        raise ValueError(
            f"mobilenet_v3_{size} is built from scratch only (weights=None): pretrained "
            "keras.applications weights cannot be downloaded here and would not match "
            "kdzoo's re-wired top. Load a kdzoo checkpoint with kdzoo.load(...) instead.")
    input_shape = tuple(input_shape)
    if bn_momentum is not None and not (isinstance(bn_momentum, (int, float))
                                        and 0.0 <= bn_momentum < 1.0):
        raise ValueError(f"bn_momentum must be a number in [0, 1), got {bn_momentum!r}.")
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}.")
    base = _APPLICATION[size](
        input_shape=input_shape, alpha=alpha, minimalistic=minimalistic,
        include_top=False, weights=None, pooling=None, include_preprocessing=True)
    stage_of = {layer_name: i + 1 for i, layer_name in enumerate(_STAGE_LAYERS[size])}
    last_stage = len(stage_of) + 1

    def clone_function(layer):
        if isinstance(layer, keras.layers.Rescaling):
            return keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="preprocess")
        if bn_momentum is not None and isinstance(layer, keras.layers.BatchNormalization):
            return keras.layers.BatchNormalization.from_config(
                {**layer.get_config(), "momentum": bn_momentum})
        return layer  # reuse: `base` itself is thrown away

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in stage_of:
            out = common.stage_marker(out, stage_of[layer.name])
        return out

    backbone = keras.models.clone_model(
        base, clone_function=clone_function, call_function=call_function)
    inputs = common.image_input(input_shape)
    x = inputs
    # Re-trace the cloned graph on a kdzoo-named input so the model is flat
    # (stage layers visible in model.layers).
    features = keras.models.clone_model(
        backbone, input_tensors=inputs, clone_function=lambda layer: layer)
    x = common.stage_marker(features.output, last_stage)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(_LAST_POINT[size], activation="hard_swish",
                               name="last_point")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
        x = keras.layers.Dense(num_classes, activation=classifier_activation, name="head")(x)
    else:
        x = common.classifier_top(x, num_classes, include_top=False, pooling=pooling)
    return keras.Model(inputs, x, name=name or f"mobilenet_v3_{size}")


_REFERENCE = "Howard et al., Searching for MobileNetV3, ICCV 2019"


@register(
    "mobilenet_v3_small", input_size=224, num_classes=1000, family="mobilenet",
    description="MobileNetV3-Small (keras.applications graph, kdzoo stage markers "
    "and head); a student of another family (Beyer et al. 2022)",
    reference_params=2_554_968, reference=_REFERENCE)
def mobilenet_v3_small(num_classes=1000, include_top=True, input_shape=(224, 224, 3),
                       pooling=None, **kwargs):
    """MobileNetV3-Small (alpha 1.0: 2.5M parameters with a 1000-class head)."""
    return _build("small", num_classes=num_classes, include_top=include_top,
                  input_shape=input_shape, pooling=pooling, **kwargs)


@register(
    "mobilenet_v3_large", input_size=224, num_classes=1000, family="mobilenet",
    description="MobileNetV3-Large (keras.applications graph, kdzoo stage markers "
    "and head); a student of another family (Beyer et al. 2022)",
    reference_params=5_507_432, reference=_REFERENCE)
def mobilenet_v3_large(num_classes=1000, include_top=True, input_shape=(224, 224, 3),
                       pooling=None, **kwargs):
    """MobileNetV3-Large (alpha 1.0: 5.5M parameters with a 1000-class head)."""
    return _build("large", num_classes=num_classes, include_top=include_top,
                  input_shape=input_shape, pooling=pooling, **kwargs)
