"""Depth-adaptive inference for :class:`kdzoo.distill.self_distill.SelfDistillation`.

* :class:`EarlyExit` runs a batch section by section in graph mode
  (``tf.function``). After section k the exit-k classifier scores the rows still
  undecided; rows whose top softmax probability exceeds threshold k are
  finished there, and only the remaining rows are gathered and passed on to
  section k+1, so deeper sections really compute fewer images. It counts the
  rows every section processes.
* :func:`kdzoo.distill.self_distill.exit_calibration.calibrate_thresholds` picks thresholds
  on held-out data for a target accuracy, a loss bound or a compute budget, by
  simulating the exit rule on all exits' logits (exact: the rule only depends
  on those).
* :func:`count_flops` / :func:`exit_flops` count FLOPs analytically
  (2 x multiply-accumulates of Conv2D / DepthwiseConv2D / SeparableConv2D /
  Dense layers; BN, activations, pooling and additions are not counted).
* :func:`export_exit` (in :mod:`kdzoo.distill.self_distill.exit_export`) cuts one exit out
  as a standalone functional ``keras.Model`` that holds only the layers up to
  that exit; it saves as ``.keras`` and as a SavedModel (``model.export``), and
  :func:`to_tflite` converts it.

Threshold rule: a row leaves at shallow exit k when ``max softmax > t_k``
(strictly), so ``t_k = 1.0`` never leaves early and ``t_k = 0.0`` always does.
The deepest exit takes every row left, so there are ``num_exits - 1`` thresholds.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from kdzoo.distill._checks import check_pixel_range
from kdzoo.distill.self_distill.exit_export import export_exit, to_tflite  # noqa: F401  (public here)

# --------------------------------------------------------------------------- FLOPs


def _macs_of_layer(layer):
    if isinstance(layer, keras.layers.SeparableConv2D):
        out = layer.output.shape
        cin = layer.input.shape[-1]
        kh, kw = layer.kernel_size
        depth = out[1] * out[2] * kh * kw * cin * layer.depth_multiplier
        return depth + out[1] * out[2] * cin * layer.depth_multiplier * layer.filters
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        out = layer.output.shape
        kh, kw = layer.kernel_size
        return out[1] * out[2] * kh * kw * layer.input.shape[-1] * layer.depth_multiplier
    if isinstance(layer, keras.layers.Conv2D):
        out = layer.output.shape
        kh, kw = layer.kernel_size
        cin = layer.input.shape[-1]
        return out[1] * out[2] * kh * kw * (cin // layer.groups) * layer.filters
    if isinstance(layer, keras.layers.Dense):
        shape = layer.input.shape
        positions = int(np.prod([d for d in shape[1:-1]])) if len(shape) > 2 else 1
        return positions * shape[-1] * layer.units
    return 0


def count_flops(model):
    """FLOPs of one image through ``model`` (2 x MACs of conv and dense layers)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_flops(layer)
        else:
            total += 2 * int(_macs_of_layer(layer))
    return total


# --------------------------------------------------------------------------- sections


def split_sections(model):
    """``(sections, heads)``: per-section sub-models and per-exit classifier sub-models.

    ``sections[0]`` maps the input image to the first exit's features,
    ``sections[k]`` maps exit k's features to exit k+1's; ``heads[k]`` maps exit
    k+1's features to its logits (bottleneck + pool + classifier).
    """
    feats = model._exit_feature_tensors
    logits = model._exit_logit_tensors
    sections, heads = [], []
    for k, f in enumerate(feats):
        source = model.network.inputs if k == 0 else feats[k - 1]
        try:
            sections.append(keras.Model(source, f, name=f"section{k + 1}"))
            heads.append(keras.Model(f, logits[k], name=f"exit{k + 1}_head"))
        except ValueError as e:
            raise ValueError(
                f"Cannot cut the backbone at exit layer {model.exit_names[k]!r}: some "
                "connection bypasses it (e.g. a skip connection across exits). Early exit "
                f"needs exits that separate the network into sections. ({e})") from e
    return sections, heads


def exit_flops(model):
    """FLOPs per image, as a dict.

    ``sections``/``heads``: each section's and each exit classifier's FLOPs;
    ``to_exit``: cumulative cost of an early-exit run that stops at exit k
    (sections 1..k and classifiers 1..k); ``full``: the plain backbone
    (all sections + the deepest classifier, no shallow exits).
    """
    sections, heads = split_sections(model)
    s = [count_flops(m) for m in sections]
    h = [count_flops(m) for m in heads]
    to_exit = list(np.cumsum(np.array(s) + np.array(h)).astype(int))
    return {"sections": s, "heads": h, "to_exit": [int(v) for v in to_exit],
            "full": int(sum(s) + h[-1])}


def validate_thresholds(thresholds, num_exits):
    """Thresholds as a float list of length ``num_exits - 1``, each in [0, 1]."""
    try:
        values = [float(t) for t in np.ravel(np.asarray(thresholds, dtype="float64"))]
    except (TypeError, ValueError) as e:
        raise ValueError(f"thresholds must be numbers, got {thresholds!r}.") from e
    if len(values) != num_exits - 1:
        raise ValueError(
            f"Expected {num_exits - 1} thresholds (one per shallow exit; the deepest exit "
            f"takes whatever is left) for {num_exits} exits, got {len(values)}.")
    bad = [t for t in values if not 0.0 <= t <= 1.0 or np.isnan(t)]
    if bad:
        raise ValueError(f"Thresholds must lie in [0, 1]; got {bad} in {values}.")
    return values


class EarlyExit:
    """Confidence-threshold early exit that skips the deeper sections' compute.

    ``runner = EarlyExit(model, thresholds=[0.9, 0.9, 0.9])``;
    ``out = runner(images)`` gives tensors ``logits`` [B, classes], ``exit``
    [B] (1-based exit that answered), ``section_rows`` [num_exits] (rows each
    section processed). :meth:`predict` and :meth:`evaluate` loop over batches.
    """

    def __init__(self, model, thresholds):
        self.model = model
        self.num_exits = model.num_exits
        self.sections, self.heads = split_sections(model)
        self.thresholds = thresholds
        self.flops = exit_flops(model)
        self._section_outputs = [(tuple(s.outputs[0].shape[1:]), s.outputs[0].dtype)
                                 for s in self.sections]
        self._fn = tf.function(self._run, reduce_retracing=True)

    @property
    def thresholds(self):
        return list(self._thresholds)

    @thresholds.setter
    def thresholds(self, values):
        self._thresholds = validate_thresholds(values, self.num_exits)

    def _run(self, x, thresholds):
        """One fused graph: sections, exit decisions and one scatter of the answers.

        Rows that leave at exit k are only collected (indices, logits); a single
        ``scatter_nd`` at the end writes every answer, and the rows that go on are
        gathered once per section (skipped when all rows go on).
        """
        batch = tf.shape(x)[0]
        rows = tf.range(batch)
        done_rows, done_logits, done_exits, counts = [], [], [], []
        h = x
        for k in range(self.num_exits):
            counts.append(tf.shape(h)[0])
            h, z = self._section_and_head(k, h)
            if k == self.num_exits - 1:
                leave_rows, leave_logits = rows, z
            else:
                confident = tf.reduce_max(tf.nn.softmax(z, axis=-1), axis=-1) > thresholds[k]
                leave = tf.reshape(tf.where(confident), [-1])
                leave_rows, leave_logits = tf.gather(rows, leave), tf.gather(z, leave)
                h, rows = self._keep(h, rows, confident)
            done_rows.append(leave_rows)
            done_logits.append(leave_logits)
            done_exits.append(tf.fill(tf.shape(leave_rows), k + 1))
        index = tf.concat(done_rows, 0)[:, None]
        logits = tf.scatter_nd(index, tf.concat(done_logits, 0),
                               tf.stack([batch, self.model.num_classes]))
        exits = tf.scatter_nd(index, tf.concat(done_exits, 0), batch[None])
        return logits, exits, tf.stack(counts)

    @staticmethod
    def _keep(h, rows, confident):
        """The rows that go on to the next section (no copy when every row does)."""
        def gather():
            stay = tf.reshape(tf.where(tf.logical_not(confident)), [-1])
            return tf.gather(h, stay), tf.gather(rows, stay)
        return tf.cond(tf.reduce_any(confident), gather, lambda: (h, rows))

    def _section_and_head(self, k, h):
        """Section k and its classifier on the rows left, or nothing when none are left.

        A section that receives no rows launches no kernel: ``tf.cond`` skips it. Besides
        saving the call, this matters for correctness: oneDNN's Conv2D and
        BatchNormalization kernels fail on an empty batch (``Incompatible shapes:
        [0,8,8,16] vs. [32]``), which single images and low thresholds produce.
        """
        feat_shape, feat_dtype = self._section_outputs[k]

        def run():
            f = self.sections[k](h, training=False)
            return f, tf.cast(self.heads[k](f, training=False), tf.float32)

        def skip():
            return (tf.zeros([0, *feat_shape], feat_dtype),
                    tf.zeros([0, self.model.num_classes], tf.float32))

        return tf.cond(tf.shape(h)[0] > 0, run, skip)

    def _check_images(self, images):
        images = tf.convert_to_tensor(images)
        expected = tuple(self.model.network.inputs[0].shape)
        want = "[batch, " + ", ".join("any" if d is None else str(d)
                                      for d in expected[1:]) + "]"
        if not (images.dtype.is_integer or images.dtype.is_floating):
            raise TypeError(f"Early exit takes raw pixels (uint8 or float in [0, 255]) "
                            f"shaped {want}; got dtype {images.dtype.name}.")
        if images.dtype.is_floating and tf.executing_eagerly():
            check_pixel_range(images.numpy(), "EarlyExit")
        if images.shape.rank != len(expected):
            hint = (" Add the batch axis: images[None]." if images.shape.rank ==
                    len(expected) - 1 else "")
            raise ValueError(f"Early exit takes images shaped {want}; got shape "
                             f"{tuple(images.shape)}.{hint}")
        for got, need in zip(images.shape[1:], expected[1:]):
            if got is not None and need is not None and got != need:
                raise ValueError(f"Early exit takes images shaped {want}; got shape "
                                 f"{tuple(images.shape)}. Resize the images (or build the "
                                 "backbone with that input_shape).")
        return images

    def __call__(self, images):
        images = self._check_images(images)
        if images.dtype != tf.float32:
            images = tf.cast(images, tf.float32)
        logits, exits, rows = self._fn(images, tf.constant(self._thresholds, tf.float32))
        return {"logits": logits, "exit": exits, "section_rows": rows}

    def predict(self, images, batch_size=256):
        """Run over ``images`` batch by batch; numpy results plus compute statistics."""
        n = len(images)
        if n == 0:
            raise ValueError("No images given.")
        logits, exits = [], []
        rows = np.zeros(self.num_exits, dtype=np.int64)
        for start in range(0, n, batch_size):
            out = self(images[start:start + batch_size])
            logits.append(out["logits"].numpy())
            exits.append(out["exit"].numpy())
            rows += out["section_rows"].numpy()
        exits = np.concatenate(exits)
        to_exit = np.asarray(self.flops["to_exit"], dtype=np.float64)
        avg_flops = float(to_exit[exits - 1].mean())
        return {
            "logits": np.concatenate(logits),
            "exit": exits,
            "section_rows": rows,
            "avg_sections": float(rows.sum() / n),
            "exit_fractions": [float(np.mean(exits == k + 1)) for k in range(self.num_exits)],
            "avg_flops": avg_flops,
            "flops_fraction": avg_flops / self.flops["full"],
        }

    def evaluate(self, images, labels, batch_size=256):
        """:meth:`predict` plus ``accuracy`` and ``images_per_s`` (after one warm-up batch)."""
        labels = _check_labels(labels, len(images))
        self(images[:batch_size])  # trace outside the timing
        start = time.perf_counter()
        result = self.predict(images, batch_size=batch_size)
        elapsed = time.perf_counter() - start
        result["accuracy"] = float(np.mean(result["logits"].argmax(-1) == labels))
        result["images_per_s"] = len(images) / elapsed
        return result


def _check_labels(labels, n):
    if labels is None:
        raise ValueError("Labels are needed (held-out images with their labels).")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(-1)
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels.")
    return labels

