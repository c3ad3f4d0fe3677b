"""``kdzoo.evaluate``: top-1 of a model with the dataset's evaluation protocol.

One call for what every user writes by hand (``100 * mean(argmax(predict) ==
labels)``), with the preprocessing the numbers in the papers and the model cards
were measured with: the authors' ``resize_small(R)|central_crop(S)``
(:func:`kdzoo.data.eval_preprocess`). For a zoo name that is the card's own
``model_info(name)["eval_preprocessing"]`` and ``interpolation``
(:mod:`kdzoo.zoo.preprocessing`); for a Keras model, ``S`` is its input size and ``R``
the dataset spec's ``eval_resize_small`` scaled to it (160 at 128 px, 256 at 224 px),
or ``S`` itself (the central square) for data given directly.
"""

import numpy as np
import tensorflow as tf

from kdzoo.distill._checks import arrays_dataset, check_label_array, checked_dataset, input_errors
from kdzoo.zoo.preprocessing import parse_protocol, protocol_text


def _input_size(model):
    shape = getattr(model, "inputs", None) and model.inputs[0].shape
    if not shape or shape[1] is None or shape[1] != shape[2]:
        raise ValueError(f"kdzoo.evaluate needs a model with a fixed square input (got "
                         f"input shape {shape}); pass image_size=.")
    return int(shape[1])


def _examples(dataset, split, data_dir, num_classes):
    """``(tf.data of (image, label), spec or None)`` from a name, arrays or a dataset."""
    from kdzoo.data.pipeline import load_split
    from kdzoo.data.specs import get_spec
    if isinstance(dataset, str):
        spec = get_spec(dataset)
        return load_split(spec, split, data_dir, shuffle=False), spec
    if isinstance(dataset, tf.data.Dataset):  # each image checked as fit checks its input
        return checked_dataset(dataset, num_classes, "kdzoo.evaluate"), None
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        return arrays_dataset(*dataset, "kdzoo.evaluate"), None
    raise TypeError("kdzoo.evaluate takes a dataset name (e.g. 'fashion_mnist'), a "
                    "tf.data.Dataset of (image, label) or a tuple (images, labels); got "
                    f"{type(dataset).__name__}.")


def evaluate(model, dataset, split="test", *, batch_size=256, data_dir=None,
             image_size=None, resize_small=None):
    """Top-1 accuracy (%) of ``model`` on ``dataset``.

    Args:
      model: a zoo name (loaded with its published weights) or a Keras model that
        takes raw [0, 255] pixels and returns logits.
      dataset: a kdzoo/TFDS dataset name (read with kdzoo's splits, e.g. ``"pets"``,
        ``"fashion_mnist"``), a ``tf.data.Dataset`` of unbatched ``(image, label)``,
        or an ``(images, labels)`` tuple of arrays.
      split: the role, ``"test"``, ``"minival"`` or ``"train"`` (for a name).
      image_size / resize_small: override the protocol (defaults: a name's card
        ``eval_preprocessing``; else the model's input size and the dataset spec's
        ``eval_resize_small`` scaled to it, or no resize beyond the central square
        for data given directly).

    Returns ``{"top1", "num_examples", "protocol", "interpolation"}``.
    """
    from kdzoo.train.fit import eval_batches, eval_resize_small
    from kdzoo.zoo.loader import load
    net = load(model) if isinstance(model, str) else model
    card = _card_protocol(model) if isinstance(model, str) else None
    size = int(image_size) if image_size is not None else _input_size(net)
    num_classes = int(net.outputs[0].shape[-1])
    examples, spec = _examples(dataset, split, data_dir, num_classes)
    interpolation = card[2] if card else "area"
    if resize_small is None:
        if card and image_size is None:
            resize_small, size = card[0], card[1]
        else:
            resize_small = eval_resize_small(spec, size) if spec is not None else size
    batches = eval_batches(examples, size, int(batch_size), resize_small=resize_small,
                           method=interpolation)
    correct = total = 0
    with input_errors():  # a refused element of a tf.data input: ValueError, not TF's
        for images, labels in batches:
            labels = np.asarray(labels).reshape(-1)
            check_label_array(labels, num_classes, "kdzoo.evaluate")
            logits = np.asarray(net(images, training=False))
            correct += int(np.sum(_hits(logits, labels)))
            total += len(labels)
    if total == 0:
        raise ValueError(f"kdzoo.evaluate: no examples in {dataset!r} ({split}).")
    return {"top1": 100.0 * correct / total, "num_examples": total,
            "protocol": protocol_text(resize_small, size), "interpolation": interpolation}


def top1(logits, labels):
    """Top-1 (%) of predictions already made: ``logits`` (or probabilities) ``(N, C)``
    against integer ``labels`` ``(N,)``.

    The array half of :func:`evaluate`, for what a report holds in memory: one exit's
    logits, an ensemble's mean, or the agreement with a teacher (its predicted classes
    as ``labels``). ``100 * mean(argmax == labels)``, written once here.
    """
    logits, labels = np.asarray(logits), np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"top1 needs logits (N, C) and N labels; got logits {logits.shape} "
                         f"and {len(labels)} labels.")
    return 100 * float(np.mean(_hits(logits, labels)))


def _hits(logits, labels):
    """Whether each example's top class is its label (the one definition of "correct")."""
    return np.asarray(logits).argmax(-1) == labels


def _card_protocol(name):
    """``(resize_small, crop, interpolation)`` of a zoo name's card (or bare architecture)."""
    from kdzoo.zoo.registry import model_info
    info = model_info(name)
    resize_small, crop = parse_protocol(info["eval_preprocessing"],
                                        f"model_info({name!r})['eval_preprocessing']")
    return resize_small, crop, info["interpolation"]
