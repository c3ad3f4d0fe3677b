"""Self distillation ("Be Your Own Teacher", Zhang et al., ICCV 2019).

One network is cut into sections. After every section but the deepest, an
*exit* is attached: a bottleneck that brings the section's features to the
deepest section's shape (channels and spatial size), global average pooling and
a Dense classifier. The deepest exit is the network's own classifier.

Losses (``mode="self_distillation"``), summed over exits::

    deepest exit:   CE(labels, z_N)
    shallow exit i: (1 - alpha) * CE(labels, z_i)
                    + alpha * KL(softmax(z_N / T) || softmax(z_i / T)) * T**2
                    + feature_weight * mean((bottleneck_i - stop_gradient(F_N))**2)

where ``F_N`` is the deepest section's output and the teacher side of the KL
carries no gradient (``kdzoo.distill.losses``: T**2 convention). With
``mode="deep_supervision"`` (the paper's comparison) every exit gets plain CE.

``evaluate`` reports top-1 of every exit and of the ensemble (mean of the exit
logits). Depth-adaptive inference lives in :mod:`kdzoo.distill.early_exit`.
"""

import difflib

import keras
import tensorflow as tf
from keras import ops

from kdzoo.callbacks import with_directions
from kdzoo.distill._checks import CheckedInputs
from kdzoo.distill.gradients import apply_with_global_clip
from kdzoo.distill.losses import feature_hint, kl_divergence
from kdzoo.distill.views import check_number
from kdzoo.models.common import stage_names

MODES = ("self_distillation", "deep_supervision")


# --------------------------------------------------------------------------- losses

def _labels_to_sparse(labels, num_classes):
    """Integer class ids [B] from sparse labels [B] / [B, 1] or one-hot [B, num_classes]."""
    labels = ops.convert_to_tensor(labels)
    rank = len(labels.shape)
    if rank == 2 and labels.shape[-1] == num_classes and num_classes != 1:
        return ops.cast(ops.argmax(labels, axis=-1), "int32"), labels
    if rank == 2 and labels.shape[-1] == 1:
        labels = ops.reshape(labels, (-1,))
        rank = 1
    if rank != 1:
        raise ValueError(
            f"Labels must be class ids of shape [batch] or one-hot of shape "
            f"[batch, {num_classes}]; got shape {tuple(labels.shape)}.")
    return ops.cast(labels, "int32"), None


def _weighted_mean(values, sample_weight):
    if sample_weight is None:
        return ops.mean(values)
    w = ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
    return ops.sum(values * w) / ops.maximum(ops.sum(w), 1e-12)


def cross_entropy(labels, logits, sample_weight=None, num_classes=None):
    """Mean softmax cross entropy from logits (sparse or one-hot labels)."""
    num_classes = num_classes or logits.shape[-1]
    logits = ops.cast(logits, "float32")
    sparse, one_hot = _labels_to_sparse(labels, num_classes)
    if one_hot is not None:
        per_example = keras.losses.categorical_crossentropy(
            ops.cast(one_hot, "float32"), logits, from_logits=True)
    else:
        per_example = keras.losses.sparse_categorical_crossentropy(
            sparse, logits, from_logits=True)
    return _weighted_mean(per_example, sample_weight)


def self_distillation_terms(labels, exit_logits, exit_features, deep_features, *,
                            alpha=0.3, temperature=3.0, feature_weight=0.03,
                            mode="self_distillation", sample_weight=None):
    """Every loss term of one batch, as a dict of scalars.

    ``exit_logits``: shallow to deep, the last is the deepest exit.
    ``exit_features``: the bottleneck outputs of the shallow exits (one fewer).
    ``deep_features``: the deepest section's output (the hint target).

    Returns ``{"loss", "ce", "kl", "hint", "ce_per_exit", "kl_per_exit",
    "hint_per_exit"}`` where ``ce``/``kl``/``hint`` are the *weighted* sums that
    make up ``loss`` and the ``*_per_exit`` lists hold the unweighted terms.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    if len(exit_features) != len(exit_logits) - 1:
        raise ValueError(f"Expected {len(exit_logits) - 1} bottleneck outputs for "
                         f"{len(exit_logits)} exits, got {len(exit_features)}.")
    teacher = exit_logits[-1]
    ce_terms = [cross_entropy(labels, z, sample_weight) for z in exit_logits]
    kl_terms, hint_terms = [], []
    zero = ops.zeros((), "float32")
    if mode == "deep_supervision":
        ce = ops.sum(ops.stack(ce_terms))
        return {"loss": ce, "ce": ce, "kl": zero, "hint": zero, "ce_per_exit": ce_terms,
                "kl_per_exit": [], "hint_per_exit": []}
    ce = ce_terms[-1]
    kl = zero
    hint = zero
    for z, f, c in zip(exit_logits[:-1], exit_features, ce_terms[:-1]):
        k = kl_divergence(ops.stop_gradient(teacher), z, temperature)
        h = feature_hint(f, deep_features)
        kl_terms.append(k)
        hint_terms.append(h)
        ce = ce + (1.0 - alpha) * c
        kl = kl + alpha * k
        hint = hint + feature_weight * h
    return {"loss": ce + kl + hint, "ce": ce, "kl": kl, "hint": hint,
            "ce_per_exit": ce_terms, "kl_per_exit": kl_terms, "hint_per_exit": hint_terms}


# --------------------------------------------------------------------------- exits

def _did_you_mean(name, candidates):
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.4)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def _bn(x, name):
    return keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=name)(x)


def exit_bottleneck(x, target_shape, name, bottleneck_ratio=4):
    """Bring ``x`` [B, H, W, C] to ``target_shape`` (H', W', C') as in BYOT's code.

    1x1 conv to C'/ratio, a k x k conv with stride k (k = H / H'), a 1x1 conv to
    C', each followed by BN + ReLU. When H / H' is not an integer, 3x3 stride-2
    "same" convolutions halve the size until it matches.
    """
    h, w, c = (int(d) for d in target_shape)
    mid = max(1, c // bottleneck_ratio)
    y = keras.layers.Conv2D(mid, 1, use_bias=False, name=f"{name}_reduce")(x)
    y = keras.layers.ReLU(name=f"{name}_reduce_relu")(_bn(y, f"{name}_reduce_bn"))
    in_h, in_w = int(x.shape[1]), int(x.shape[2])
    if in_h % h == 0 and in_w % w == 0 and in_h // h == in_w // w:
        k = in_h // h
        y = keras.layers.Conv2D(mid, k, strides=k, use_bias=False, name=f"{name}_down")(y)
        y = keras.layers.ReLU(name=f"{name}_down_relu")(_bn(y, f"{name}_down_bn"))
    else:
        step = 0
        while int(y.shape[1]) > h or int(y.shape[2]) > w:
            step += 1
            y = keras.layers.Conv2D(mid, 3, strides=2, padding="same", use_bias=False,
                                    name=f"{name}_down{step}")(y)
            y = keras.layers.ReLU(name=f"{name}_down{step}_relu")(
                _bn(y, f"{name}_down{step}_bn"))
        if (int(y.shape[1]), int(y.shape[2])) != (h, w):
            raise ValueError(
                f"Cannot bring features of spatial size {in_h}x{in_w} to the deepest "
                f"exit's {h}x{w} with strided convolutions; choose exit layers whose "
                "sizes are multiples of the deepest one's.")
    y = keras.layers.Conv2D(c, 1, use_bias=False, name=f"{name}_expand")(y)
    return keras.layers.ReLU(name=f"{name}_expand_relu")(_bn(y, f"{name}_expand_bn"))


def _static_feature_shape(tensor, layer_name):
    shape = tuple(tensor.shape)
    if len(shape) != 4:
        raise ValueError(
            f"Exit layer {layer_name!r} outputs shape {shape}; exits need 4-D feature "
            "maps [batch, height, width, channels].")
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"Exit layer {layer_name!r} has a dynamic shape {shape}; build the backbone "
            "with a fixed input_shape (e.g. input_shape=(32, 32, 3)).")
    return shape[1:]


# --------------------------------------------------------------------------- model

@keras.saving.register_keras_serializable(package="kdzoo")
class SelfDistillation(CheckedInputs, keras.Model):
    """A backbone with one classifier exit per section, trained by self distillation.

    Args:
      backbone: a functional ``keras.Model``. Zoo models mark their section
        outputs with layers ``stage1..stageN``; any other functional model works
        when ``exits`` names its section-output layers.
      num_classes: classes of every exit.
      exits: layer names, shallow to deep, whose outputs end the sections; the
        last one is the deepest. ``None``: the backbone's ``stage*`` layers.
      alpha: weight of the KL term (1 - alpha goes to CE) for shallow exits.
      temperature: distillation temperature T.
      feature_weight: weight of the feature hint.
      mode: ``"self_distillation"`` or ``"deep_supervision"`` (CE on every exit).
      bottleneck_ratio: the exit bottlenecks' inner width is C_deepest / ratio.

    ``call`` returns the list of exit logits, shallow to deep. The deepest exit
    is the backbone's own ``head`` Dense layer when it has one after the last
    stage, else a new global-average-pool + Dense classifier.
    """

    def __init__(self, backbone, num_classes, exits=None, alpha=0.3, temperature=3.0,
                 feature_weight=0.03, mode="self_distillation", bottleneck_ratio=4,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(backbone, keras.Model) or not hasattr(backbone, "inputs") \
                or backbone.inputs is None:
            raise TypeError("backbone must be a functional keras.Model (built with "
                            "keras.Input), e.g. kdzoo.load(...) or keras.applications.*.")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if (not isinstance(num_classes, int) or isinstance(num_classes, bool)
                or num_classes < 1):
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
        alpha = check_number(alpha, "alpha", minimum=0.0, maximum=1.0,
                             hint=" It weighs KL (alpha) against CE (1 - alpha); the "
                                  "paper uses 0.3.")
        temperature = check_number(temperature, "temperature", minimum=0.0, strict=True,
                                   hint=" The paper uses 3.0.")
        feature_weight = check_number(feature_weight, "feature_weight", minimum=0.0,
                                      hint=" 0 turns the feature hint off; the paper "
                                           "uses 0.03.")
        if (not isinstance(bottleneck_ratio, int) or isinstance(bottleneck_ratio, bool)
                or bottleneck_ratio < 1):
            raise ValueError(f"bottleneck_ratio must be a positive int (the exit "
                             f"bottlenecks are C_deepest / ratio wide; default 4), got "
                             f"{bottleneck_ratio!r}.")
        self.backbone = backbone
        self.num_classes = num_classes
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.feature_weight = float(feature_weight)
        self.mode = mode
        self.bottleneck_ratio = int(bottleneck_ratio)
        self._exits_arg = None if exits is None else [str(e) for e in exits]
        self.exit_names = self._resolve_exits(backbone, exits)
        self._build_network()
        self._make_metrics()
        self.built = True

    # ---- construction
    @staticmethod
    def _resolve_exits(backbone, exits):
        if exits is None:
            names = stage_names(backbone)
            if not names:
                raise ValueError(
                    f"Backbone {backbone.name!r} has no stage-output layers (stage1, "
                    "stage2, ...); pass exits=[layer names of the section outputs], "
                    "e.g. for keras.applications.ResNet50: ['conv2_block3_out', "
                    "'conv3_block4_out', 'conv4_block6_out', 'conv5_block3_out'].")
        else:
            if isinstance(exits, str):
                raise TypeError("exits must be a list of layer names, not one string.")
            names = list(exits)
        if len(names) < 2:
            raise ValueError(f"Self distillation needs at least two exits, got {names}.")
        if len(set(names)) != len(names):
            raise ValueError(f"Exit layer names repeat: {names}.")
        layer_names = [layer.name for layer in backbone.layers]
        for name in names:
            if name not in layer_names:
                raise ValueError(
                    f"Exit layer {name!r} is not in backbone {backbone.name!r}."
                    f"{_did_you_mean(name, layer_names)}")
        order = [layer_names.index(n) for n in names]
        if order != sorted(order):
            raise ValueError(f"Exit layers must be listed shallow to deep; got {names}.")
        return names

    def _deepest_head(self, deep_tensor):
        """The backbone's own ``head`` when it sits after the deepest exit, else None."""
        bb = self.backbone
        try:
            head = bb.get_layer("head")
        except ValueError:
            return None
        stages = stage_names(bb)
        if not stages or self.exit_names[-1] != stages[-1]:
            return None
        if not isinstance(head, keras.layers.Dense):
            return None
        if head.units != self.num_classes:
            raise ValueError(
                f"num_classes mismatch: SelfDistillation(num_classes={self.num_classes}) "
                f"but the backbone's classifier 'head' has {head.units} classes. Build the "
                f"backbone with num_classes={self.num_classes} (or include_top=False).")
        if head.activation not in (None, keras.activations.linear):
            raise ValueError("The backbone's 'head' applies an activation; exits need "
                             "logits. Build it with classifier_activation=None.")
        return head.output

    def _build_network(self):
        bb = self.backbone
        feats = [bb.get_layer(n).output for n in self.exit_names]
        shapes = [_static_feature_shape(f, n) for f, n in zip(feats, self.exit_names)]
        deep_shape = shapes[-1]
        taken = {layer.name for layer in bb.layers}
        n_exits = len(feats)
        for i in range(1, n_exits + 1):
            for layer_name in taken:
                if layer_name.startswith(f"exit{i}_"):
                    raise ValueError(f"Backbone layer {layer_name!r} clashes with the exit "
                                     f"layers' names (exit{i}_*); rename it.")
        logits, bottlenecks = [], []
        for i, (f, name) in enumerate(zip(feats[:-1], self.exit_names[:-1]), start=1):
            b = exit_bottleneck(f, deep_shape, f"exit{i}_bottleneck", self.bottleneck_ratio)
            bottlenecks.append(b)
            p = keras.layers.GlobalAveragePooling2D(name=f"exit{i}_pool")(b)
            logits.append(keras.layers.Dense(self.num_classes, name=f"exit{i}_classifier")(p))
        deep_logits = self._deepest_head(feats[-1])
        if deep_logits is None:
            p = keras.layers.GlobalAveragePooling2D(name=f"exit{n_exits}_pool")(feats[-1])
            deep_logits = keras.layers.Dense(self.num_classes,
                                             name=f"exit{n_exits}_classifier")(p)
        logits.append(deep_logits)
        self.network = keras.Model(bb.inputs, logits + bottlenecks + [feats[-1]],
                                   name=f"{bb.name}_exits")
        self._exit_feature_tensors = feats
        self._exit_logit_tensors = logits
        self.num_exits = n_exits

    def _make_metrics(self):
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.hint_tracker = keras.metrics.Mean(name="hint")
        self.exit_accuracy = [keras.metrics.SparseCategoricalAccuracy(name=f"exit{i}_top1")
                              for i in range(1, self.num_exits + 1)]
        self.ensemble_accuracy = keras.metrics.SparseCategoricalAccuracy(name="ensemble_top1")

    @property
    def metrics(self):
        tracked = [self.loss_tracker, self.ce_tracker]
        if self.mode == "self_distillation":
            tracked += [self.kl_tracker, self.hint_tracker]
        # with_directions: so ModelCheckpoint/EarlyStopping mode="auto" know each way.
        return with_directions(tracked + self.exit_accuracy + [self.ensemble_accuracy],
                               down=("ce", "kl", "hint"))

    # ---- forward
    def call(self, inputs, training=False):
        """Exit logits, shallow to deep."""
        return self.network(inputs, training=training)[: self.num_exits]

    def forward_with_features(self, inputs, training=False):
        """``(exit_logits, bottleneck_outputs, deepest_features)``."""
        outs = self.network(inputs, training=training)
        n = self.num_exits
        return list(outs[:n]), list(outs[n:2 * n - 1]), outs[2 * n - 1]

    @staticmethod
    def ensemble(exit_logits):
        """The ensemble's logits: the mean of the exit logits."""
        return ops.mean(ops.stack([ops.cast(z, "float32") for z in exit_logits]), axis=0)

    def compute_terms(self, labels, exit_logits, exit_features, deep_features,
                      sample_weight=None):
        return self_distillation_terms(
            labels, exit_logits, exit_features, deep_features, alpha=self.alpha,
            temperature=self.temperature, feature_weight=self.feature_weight,
            mode=self.mode, sample_weight=sample_weight)

    # ---- training / evaluation
    def _unpack(self, data, what):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError(
                f"SelfDistillation.{what} needs labels: give batches of (images, labels) "
                "(or (images, labels, sample_weights)); got images only.")
        return x, y, sample_weight

    def _update_metrics(self, terms, labels, exit_logits, sample_weight):
        self.loss_tracker.update_state(terms["loss"])
        self.ce_tracker.update_state(terms["ce"])
        self.kl_tracker.update_state(terms["kl"])
        self.hint_tracker.update_state(terms["hint"])
        sparse, _ = _labels_to_sparse(labels, self.num_classes)
        for metric, z in zip(self.exit_accuracy, exit_logits):
            metric.update_state(sparse, z, sample_weight=sample_weight)
        self.ensemble_accuracy.update_state(sparse, self.ensemble(exit_logits),
                                            sample_weight=sample_weight)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        x, y, sample_weight = self._unpack(data, "fit")
        with tf.GradientTape() as tape:
            logits, feats, deep = self.forward_with_features(x, training=True)
            terms = self.compute_terms(y, logits, feats, deep, sample_weight)
            loss = terms["loss"]
            if self.losses:
                loss = loss + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
            # Gradients are summed over replicas under tf.distribute: average instead.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(loss / replicas if replicas > 1 else loss)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        apply_with_global_clip(self.optimizer, grads, variables)  # clip the whole-batch norm
        return self._update_metrics(terms, y, logits, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = self._unpack(data, "evaluate")
        logits, feats, deep = self.forward_with_features(x, training=False)
        terms = self.compute_terms(y, logits, feats, deep, sample_weight)
        return self._update_metrics(terms, y, logits, sample_weight)

    # ---- conveniences (see kdzoo.distill.early_exit)
    def export_exit(self, index, name=None):
        """A standalone functional model: input -> logits of exit ``index`` (1-based)."""
        from kdzoo.distill.early_exit import export_exit
        return export_exit(self, index, name=name)

    def early_exit(self, thresholds):
        """An :class:`kdzoo.distill.early_exit.EarlyExit` runner with these thresholds."""
        from kdzoo.distill.early_exit import EarlyExit
        return EarlyExit(self, thresholds)

    # ---- serialisation
    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "exits": self._exits_arg,
            "alpha": self.alpha,
            "temperature": self.temperature,
            "feature_weight": self.feature_weight,
            "mode": self.mode,
            "bottleneck_ratio": self.bottleneck_ratio,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects)
        return cls(**config)
