"""Zoo models as stock Keras layers only, so a saved file loads without ``import kdzoo``.

Two kdzoo layers are training-time conveniences that have an exact inference form:

* ``StandardizedConv2D`` (BiT's weight standardisation) standardises its kernel
  over (H, W, in) before every use. Once training is over that is a fixed
  function of the stored kernel, so it folds into an ordinary ``Conv2D`` whose
  kernel is ``(w - mean) / sqrt(var + ws_epsilon)`` (bias, strides, padding,
  dilation, groups and dtype policy unchanged).
* ``ChannelZeroPad`` (PyramidNet's shortcut) appends zero channels. Keras'
  ``ZeroPadding2D`` with ``data_format="channels_first"`` pads the last two axes
  of a 4-D tensor, i.e. (W, C) of a channels-last map, so padding
  ``((0, 0), (0, extra))`` appends exactly ``extra`` zero channels.

Every other layer is copied (config and weights). A layer that is neither stock
Keras nor one of these raises an error naming it rather than producing a file
that needs that class to load.
"""

import keras
import numpy as np

from kdzoo.models.bit import StandardizedConv2D
from kdzoo.models.cifar_pyramidnet import ChannelZeroPad

__all__ = ["to_plain_keras", "fold_standardized_kernel", "custom_layers"]


def fold_standardized_kernel(kernel, ws_epsilon):
    """The kernel ``StandardizedConv2D`` actually convolves with (float64 statistics)."""
    w = np.asarray(kernel, dtype=np.float64)
    mean = w.mean(axis=(0, 1, 2), keepdims=True)
    var = w.var(axis=(0, 1, 2), keepdims=True)
    return ((w - mean) / np.sqrt(var + ws_epsilon)).astype(np.asarray(kernel).dtype)


def _is_stock(layer):
    module = type(layer).__module__
    return module == "keras" or module.startswith("keras.")


def custom_layers(model):
    """``[(path, class name)]`` of layers in ``model`` (nested too) that are not stock Keras."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.Model) and _is_stock(layer):
            continue
        if not _is_stock(layer):
            found.append((layer.name, type(layer).__name__))
    return found


def _unwrap(model):
    """The network ``model`` says is deployable (its ``export_network()``: a distiller's
    student; a ``SelfDistillation`` refuses, naming the choices); others as they are.

    Why ask the model: a new training method answers in its own file, and this module
    needs no list of methods.
    """
    export_network = getattr(model, "export_network", None)
    return model if export_network is None else export_network()


def _plain_layer(layer, pairs):
    """A stock-Keras layer equivalent to ``layer`` (weights are set after the clone)."""
    if not isinstance(layer, keras.layers.Layer):
        return layer  # a keras.ops call on the graph (e.g. ``x + 3``): stateless, stock
    if isinstance(layer, StandardizedConv2D):
        config = layer.get_config()
        config.pop("ws_epsilon", None)
        new = keras.layers.Conv2D.from_config(config)
        pairs.append((layer, new, "fold"))
        return new
    if isinstance(layer, ChannelZeroPad):
        base = {"name": layer.name, "dtype": layer.dtype_policy}
        if layer.extra_channels == 0:
            new = keras.layers.Identity(**base)
        else:
            new = keras.layers.ZeroPadding2D(((0, 0), (0, layer.extra_channels)),
                                             data_format="channels_first", **base)
        pairs.append((layer, new, "none"))
        return new
    if isinstance(layer, keras.layers.Lambda):
        raise ValueError(
            f"Layer {layer.name!r} is a Lambda layer: its Python function is saved as "
            "code, which Keras refuses to load in safe mode. Replace it with stock "
            "layers (or keras.ops calls on the functional graph) before to_plain_keras.")
    if not _is_stock(layer):
        raise ValueError(
            f"Layer {layer.name!r} is a {type(layer).__module__}.{type(layer).__name__}, "
            "not a stock Keras layer, and to_plain_keras has no folding rule for it; a "
            "saved file would need that class to load. Rebuild the model from stock "
            "layers, or fold the layer into them yourself.")
    new = type(layer).from_config(layer.get_config())
    pairs.append((layer, new, "copy"))
    return new


def _copy_weights(pairs):
    for old, new, how in pairs:
        if how == "none":
            continue
        if not new.built:  # a layer the clone never called (not on the output path)
            continue
        if how == "fold":
            kernel = fold_standardized_kernel(keras.ops.convert_to_numpy(old.kernel),
                                              old.ws_epsilon)
            values = [kernel] + ([keras.ops.convert_to_numpy(old.bias)] if old.use_bias
                                 else [])
            new.set_weights(values)
        else:
            new.set_weights(old.get_weights())
        new.trainable = old.trainable


def to_plain_keras(model, name=None):
    """An equivalent functional model made of stock Keras layers only.

    ``model``: a functional or Sequential ``keras.Model`` (any zoo model, an
    exit from ``SelfDistillation.export_exit``), or a model with an
    ``export_network()`` (a ``FunMatchDistiller`` or ``KnowledgeDistillation``: its
    student is converted; the teacher is not part of the result).
    Outputs equal the original's within float tolerance; the result saves as
    ``.keras`` and loads with ``keras.saving.load_model`` in a process that
    never imports kdzoo, exports as a SavedModel (``model.export``) and
    converts to TFLite. Weights are copied: training the result does not
    train ``model`` (and, for BiT, no longer standardises the kernels).
    """
    model = _unwrap(model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"to_plain_keras needs a keras.Model, got {type(model).__name__}.")
    functional = isinstance(model, keras.Sequential) or (
        hasattr(model, "_nodes_by_depth") and getattr(model, "inputs", None) is not None)
    if not functional:
        raise TypeError(
            f"to_plain_keras needs a functional or Sequential model (built from "
            f"keras.Input); {model.name!r} is a subclassed {type(model).__name__} whose "
            "graph Keras cannot read. Build it functionally, or pass its inner network.")
    pairs = []
    plain = keras.models.clone_model(model, clone_function=lambda layer: _plain_layer(
        layer, pairs), recursive=True)
    _copy_weights(pairs)
    if name is not None:
        plain.name = name
    left = custom_layers(plain)
    if left:  # defensive: clone_model should never leave one
        raise RuntimeError(f"to_plain_keras left non-stock layers {left} in {model.name!r}.")
    return plain
