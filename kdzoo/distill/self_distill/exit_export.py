"""Cut one exit of a :class:`kdzoo.distill.self_distill.SelfDistillation` out as its own model.

:func:`export_exit` gives a standalone functional ``keras.Model`` holding only the
layers up to that exit (it saves as ``.keras`` and as a SavedModel with
``model.export``), and :func:`to_tflite` converts such a model, for deployments
that always stop at one exit.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf
import keras


def export_exit(model, index, name=None):
    """Standalone ``keras.Model``: image -> logits of exit ``index`` (1-based).

    It holds only the layers that exit needs (the sections up to it and its
    classifier), shares their weights with ``model``, and saves as ``.keras``
    or as a SavedModel (``exported.export(path)``).
    """
    if not isinstance(index, (int, np.integer)) or not 1 <= index <= model.num_exits:
        raise ValueError(f"Exit index must be an int in [1, {model.num_exits}] (1-based), "
                         f"got {index!r}.")
    index = int(index)
    inputs = model.network.inputs
    inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, model._exit_logit_tensors[index - 1],
                       name=name or f"{model.backbone.name}_exit{index}")


def to_tflite(keras_model, saved_model_dir=None, optimizations=None):
    """TFLite flatbuffer bytes of ``keras_model``, via a SavedModel export."""
    cleanup = None
    if saved_model_dir is None:
        cleanup = tempfile.TemporaryDirectory()
        saved_model_dir = os.path.join(cleanup.name, "saved_model")
    try:
        keras_model.export(saved_model_dir, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        if optimizations:
            converter.optimizations = list(optimizations)
        return converter.convert()
    finally:
        if cleanup is not None:
            cleanup.cleanup()
