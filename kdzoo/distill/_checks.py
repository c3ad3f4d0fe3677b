"""Input checks shared by the distillers' ``fit`` / ``evaluate``: refuse, never guess.

Without them a label 37 of 10 classes, -5 or 2.7 gives accuracy 0 silently, one
NaN pixel turns every weight NaN, and a teacher ending in softmax is matched as
if its probabilities were logits. The checks run where every input passes:

* NumPy / tensor inputs are checked at once, in Python, naming the first bad
  element;
* ``tf.data`` inputs get a ``map`` that asserts the same per batch (in the
  input pipeline, so it also holds when the step is XLA-compiled, where
  in-graph asserts are dropped); a failure raises TensorFlow's
  ``InvalidArgumentError`` carrying the message.

``fit`` also stops at the first non-finite loss (:func:`guard_callbacks`,
``stop_on_non_finite_loss=False`` turns it off) before any later callback,
e.g. a user's ``ModelCheckpoint``, can save the NaN weights over good ones.
"""

import contextlib
import math
import numbers
import re

import keras
import numpy as np
import tensorflow as tf

from kdzoo.errors import NonFiniteInputError

_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")


MARK = "[kdzoo input check] "


def _labels_message(where, num_classes):
    return (f"{where}: labels must be integer class ids in [0, {num_classes}) (or one-hot "
            f"rows of {num_classes}); fix the label mapping of the dataset, or pass the "
            "num_classes the labels were made for.")


def check_label_array(labels, num_classes, where):
    """NumPy check of sparse ids ``[B]`` / ``[B, 1]`` or one-hot ``[B, K]`` labels."""
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[-1] == num_classes and num_classes != 1:
        if not np.all(np.isfinite(y)):
            raise NonFiniteInputError(f"{where}: the one-hot labels hold NaN or Inf.")
        return
    flat = y.reshape(-1)
    if flat.dtype.kind not in "iuf" or flat.dtype == bool:
        raise ValueError(f"{_labels_message(where, num_classes)} Got dtype {y.dtype}.")
    bad = ~np.isfinite(flat) if flat.dtype.kind == "f" else np.zeros(flat.shape, bool)
    if flat.dtype.kind == "f":
        bad |= np.isfinite(flat) & (flat != np.round(flat))
    bad |= (flat < 0) | (flat >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{_labels_message(where, num_classes)} labels[{i}] is "
                         f"{flat[i].item()!r} ({int(bad.sum())} bad of {flat.size}).")


def _unit_range_message(where, top=None):
    largest = "at most 1" if top is None else f"{top:g}"
    return (f"{where}: the float images lie in [0, 1] (largest value {largest}), but kdzoo "
            "models take raw pixels in [0, 255] (uint8, or float in [0, 255]) and rescale "
            "them themselves; [0, 1] images give near-chance accuracy without any error. "
            "Pass the images before dividing by 255 (e.g. tf.cast(x * 255, tf.uint8)).")


def check_image_array(images, where):
    """NumPy check of an image array: finite, and raw [0, 255] pixels, not [0, 1]."""
    x = np.asarray(images)
    if x.dtype.kind in "fc" and not np.all(np.isfinite(x)):
        index = np.unravel_index(int(np.argmax(~np.isfinite(x))), x.shape)
        raise NonFiniteInputError(
            f"{where}: the images hold NaN or Inf (first at index {tuple(map(int, index))}). "
            "Clean or drop those images; training on them turns every weight NaN.")
    check_pixel_range(x, where)


def arrays_dataset(images, labels, where):
    """``(images, labels)`` arrays, checked, as a ``tf.data.Dataset`` of pairs."""
    if len(images) != len(labels):
        raise ValueError(f"{where}: {len(images)} images but {len(labels)} labels; pass "
                         "one label per image.")
    check_image_array(images, where)
    return tf.data.Dataset.from_tensor_slices((images, labels))


def check_pixel_range(images, where):
    """Refuse float images scaled to [0, 1] (an all-zero array passes: black is valid).

    A batch of real photos in [0, 255] whose largest value is at most 1 does not occur;
    a user who divided by 255 (as ``keras.applications`` preprocessing teaches) does.
    """
    x = np.asarray(images)
    if x.dtype.kind != "f" or x.size == 0 or x.ndim < 3:
        return
    low, top = float(x.min()), float(x.max())
    if low >= 0.0 and 0.0 < top <= 1.0:
        raise ValueError(_unit_range_message(where, top))


def _graph_checks(images, labels, num_classes, where):
    ops = []
    for x in tf.nest.flatten(images):
        if x.dtype.is_floating:
            ops.append(tf.debugging.assert_all_finite(
                x, f"{MARK}{where}: the images hold NaN or Inf. Clean or drop those images; "
                   "training on them turns every weight NaN."))
            if x.shape.rank is not None and x.shape.rank >= 3:
                ops.append(_graph_pixel_range(x, where))
    if labels is None:
        return ops
    y = tf.convert_to_tensor(labels)
    if y.shape.rank == 2 and y.shape[-1] == num_classes and num_classes != 1:
        if y.dtype.is_floating:
            ops.append(tf.debugging.assert_all_finite(y, f"{MARK}{where}: one-hot labels hold NaN."))
        return ops
    message = MARK + _labels_message(where, num_classes)
    if y.dtype.is_floating:
        ops.append(tf.debugging.assert_equal(y, tf.round(y), message=message + " A label "
                                             "is not a whole number."))
    elif not y.dtype.is_integer:
        raise ValueError(f"{_labels_message(where, num_classes)} Got dtype {y.dtype.name}.")
    ops.append(tf.debugging.assert_greater_equal(y, tf.cast(0, y.dtype), message=message))
    ops.append(tf.debugging.assert_less(y, tf.cast(num_classes, y.dtype), message=message))
    return ops


def _graph_pixel_range(x, where):
    """In-pipeline form of :func:`check_pixel_range` for one element (or batch)."""
    low, top = tf.reduce_min(x), tf.reduce_max(x)
    unit = tf.logical_and(low >= 0.0, tf.logical_and(top > 0.0, top <= 1.0))
    return tf.debugging.Assert(tf.logical_not(unit), [MARK + _unit_range_message(where)])


@contextlib.contextmanager
def input_errors():
    """Turn a failed pipeline check (a TF ``InvalidArgumentError``) into our exception."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        found = re.search(re.escape(MARK) + r"(.*?)(?: : Tensor had|\n|$)", e.message, re.S)
        if not found:
            raise
        text = found.group(1).strip()
        error = NonFiniteInputError if "NaN" in text else ValueError
        raise error(text) from None


def checked_dataset(dataset, num_classes, where, labels_used=True):
    """``dataset`` with every element's images and labels asserted as above."""
    def check(*element):
        el = element[0] if len(element) == 1 else element
        if isinstance(el, (tuple, list)):
            images, labels = el[0], (el[1] if len(el) > 1 and labels_used else None)
        else:
            images, labels = el, None
        with tf.control_dependencies(_graph_checks(images, labels, num_classes, where)):
            return tf.nest.map_structure(tf.identity, el)
    return dataset.map(check)


def checked_inputs(x, y, num_classes, where):
    """``(x, y)`` for fit / evaluate: arrays checked now, datasets wrapped."""
    if isinstance(x, tf.data.Dataset):
        return checked_dataset(x, num_classes, where), y
    if x is not None and (isinstance(x, np.ndarray) or tf.is_tensor(x)):
        check_image_array(x, where)
    if y is not None and (isinstance(y, np.ndarray) or tf.is_tensor(y)
                          or isinstance(y, (list, tuple))):
        check_label_array(y, num_classes, where)
    return x, y


def checked_validation(validation_data, num_classes, where):
    """``fit``'s ``validation_data`` (a dataset or a tuple of arrays), checked likewise."""
    if validation_data is None:
        return None
    if isinstance(validation_data, tf.data.Dataset):
        return checked_dataset(validation_data, num_classes, where)
    if isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
        checked_inputs(validation_data[0], validation_data[1], num_classes, where)
    return validation_data


def check_outputs_logits(model, role):
    """Refuse a model whose last layer already turns logits into probabilities."""
    layer = model.layers[-1] if getattr(model, "layers", None) else None
    if layer is None:
        return
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", str(activation) if activation else "")
    if isinstance(layer, keras.layers.Softmax) or name in _PROBABILITY_ACTIVATIONS:
        kind = "Softmax" if isinstance(layer, keras.layers.Softmax) else name
        raise ValueError(
            f"The {role} {model.name!r} ends in {kind} (layer {layer.name!r}): its outputs "
            "are probabilities, but distillation needs logits (softmax is applied with "
            "the temperature inside the loss). Rebuild it without the final activation, "
            "e.g. keras.applications.*(classifier_activation=None) or "
            "Dense(..., activation=None).")


def guard_callbacks(callbacks, enabled=True):
    """``callbacks`` with :class:`kdzoo.train.checkpointing.StopOnNonFiniteLoss` first."""
    from kdzoo.train.checkpointing import StopOnNonFiniteLoss
    callbacks = list(callbacks or [])
    if enabled and not any(isinstance(c, StopOnNonFiniteLoss) for c in callbacks):
        callbacks.insert(0, StopOnNonFiniteLoss())
    return callbacks


class CheckedInputs:
    """Mixin for a ``keras.Model`` with ``num_classes``: checked ``fit`` / ``evaluate``.

    ``fit`` and ``evaluate`` check labels and images as above; ``fit`` also stops
    at the first non-finite loss, naming the epoch and step
    (:class:`kdzoo.train.checkpointing.NonFiniteLossError`), before any callback can
    save the broken weights; ``fit(..., stop_on_non_finite_loss=False)`` turns
    that off.
    """

    def fit(self, x=None, y=None, *args, stop_on_non_finite_loss=True, **kwargs):
        where = f"{type(self).__name__}.fit"
        x, y = self._checked_fit_data(x, y, where)
        kwargs["callbacks"] = guard_callbacks(kwargs.get("callbacks"), stop_on_non_finite_loss)
        if kwargs.get("validation_data") is not None:
            kwargs["validation_data"] = checked_validation(
                kwargs["validation_data"], self.num_classes, f"{where}(validation_data)")
        x, y, args, kwargs = self._fit_arguments(x, y, args, kwargs)
        with input_errors():
            return super().fit(x, y, *args, **kwargs)

    def _checked_fit_data(self, x, y, where):
        """The train ``(x, y)``, checked (a model that renders its own views overrides it)."""
        return checked_inputs(x, y, self.num_classes, where)

    def _fit_arguments(self, x, y, args, kwargs):
        """``(x, y, args, kwargs)`` for ``keras.Model.fit``, once the guards are in place.

        A hook for a model whose ``fit`` turns its inputs into another stream (e.g.
        ``FunMatchDistiller``'s views) after the callbacks and validation data are guarded.
        """
        return x, y, args, kwargs

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x, y = checked_inputs(x, y, self.num_classes, f"{type(self).__name__}.evaluate")
        with input_errors():
            return super().evaluate(x, y, *args, **kwargs)


# -- generic argument checks (numbers, sizes, ranges) ------------------------
def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_number(value, name, *, minimum=None, strict=False, maximum=None, hint=""):
    """``value`` as a finite float, else a TypeError / ValueError naming ``name``.

    ``minimum`` is inclusive (exclusive with ``strict``), ``maximum`` inclusive.
    """
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r} "
                        f"({type(value).__name__}).{hint}")
    value = float(value)
    low_ok = minimum is None or (value > minimum if strict else value >= minimum)
    high_ok = maximum is None or value <= maximum
    if not math.isfinite(value) or not (low_ok and high_ok):
        lo = "" if minimum is None else (f"> {minimum}" if strict else f">= {minimum}")
        hi = "" if maximum is None else f"<= {maximum}"
        rule = " and ".join(r for r in (lo, hi) if r) or "finite"
        raise ValueError(f"{name} must be {rule}, got {value}.{hint}")
    return value


def check_size(value, name):
    """A square view side in pixels: a positive whole number, else a clear error."""
    example = f" Pass the side of the square views in pixels, e.g. {name}=224."
    if not _is_number(value):
        raise TypeError(f"{name} must be a whole number of pixels, got {value!r} "
                        f"({type(value).__name__}).{example}")
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise ValueError(f"{name} must be a positive whole number of pixels, got "
                         f"{value!r}.{example}")
    return int(value)


def check_area_range(area_range):
    """``(low, high)`` with ``0 < low <= high <= 1``: inception crops' area fractions."""
    hint = " Pass a pair of area fractions (low, high), e.g. (0.05, 1.0)."
    try:
        low, high = area_range
    except (TypeError, ValueError) as e:
        raise TypeError(f"inception_area_range must be a pair (low, high), got "
                        f"{area_range!r}.{hint}") from e
    low = check_number(low, "inception_area_range[0]", minimum=0.0, strict=True,
                       maximum=1.0, hint=hint)
    high = check_number(high, "inception_area_range[1]", minimum=0.0, strict=True,
                        maximum=1.0, hint=hint)
    if low > high:
        raise ValueError(f"inception_area_range must be (low, high) with low <= high, "
                         f"got {tuple(area_range)}; did you mean {(high, low)}?")
    return low, high
