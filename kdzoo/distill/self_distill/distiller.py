"""Self distillation ("Be Your Own Teacher", Zhang et al., ICCV 2019).

One network is cut into sections. After every section but the deepest, an
*exit* is attached: a head that brings the section's features to the deepest
section's shape (:mod:`kdzoo.distill.self_distill.exit_heads`: the paper's bottleneck, the
official code's SepConv + attention heads, or a light head for early exit), global average pooling and a Dense classifier. The
deepest exit is the network's own classifier.

The loss (:mod:`kdzoo.distill.self_distill.losses`) defaults to the authors'
code: for shallow exits ``0.7 * CE + 0.3 * soft_CE(z_i/T, z_N/T)`` without T**2
(``kd_scaling="t_squared"``: Hinton's T**2 * KL) plus ``0.03 * torch.dist`` between
a learned linear adapter of the exit's pooled feature and the deepest pooled
feature (``hint="feature_maps"``: the paper text's hint on the bottleneck maps);
the deepest exit plain CE. ``mode="deep_supervision"`` (the paper's comparison)
gives every exit plain CE.

``evaluate`` reports top-1 of every exit and of the ensemble (mean of the exit
logits). Depth-adaptive inference lives in :mod:`kdzoo.distill.self_distill.early_exit`.
"""

import keras
import tensorflow as tf
from keras import ops

from kdzoo.distill.self_distill import byot_versions
from kdzoo.distill.metric_directions import with_directions
from kdzoo.distill._checks import CheckedInputs
from kdzoo.distill.self_distill.exit_heads import HEADS, exit_head
from kdzoo.distill.self_distill.exit_names import missing_exit_message
from kdzoo.optim.gradients import apply_with_global_clip
from kdzoo.distill.self_distill.losses import (HINTS, KD_SCALINGS, MODES, _labels_to_sparse,  # noqa: F401  (re-exported)
                                               cross_entropy, self_distillation_terms)
from kdzoo.distill.funmatch.views import check_number
from kdzoo.models.common import stage_names

# --------------------------------------------------------------------------- exits

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
      alpha: weight of the KD term (1 - alpha goes to CE) for shallow exits.
      temperature: distillation temperature T.
      feature_weight: weight of the feature hint.
      mode: ``"self_distillation"`` or ``"deep_supervision"`` (CE on every exit).
      kd_scaling: ``"official"`` (soft CE, no T**2; the authors' code) or
        ``"t_squared"`` (T**2 * KL).
      hint: ``"official"`` (L2 norm between a learned linear adapter of the pooled
        exit feature and the deepest pooled feature), ``"conference"`` (squared L2
        between the pooled features, no adapter; every shallow exit by default) or
        ``"feature_maps"`` (mean squared error between the head's maps and the
        deepest maps, no adapter).
      hint_exits: 1-based shallow exits that take the hint. ``None``: as the
        authors' code for ``hint="official"`` (every shallow exit but the one next
        to the deepest: exits 1 and 2 of 4, ``train.py`` line 161), every shallow
        exit for ``hint="feature_maps"`` (the paper's text).
      head: exit head, ``"bottleneck"`` (the paper's), ``"official"`` (the official
        code's SepConv stacks behind attention gates) or ``"light"``
        (:mod:`kdzoo.distill.self_distill.exit_heads`).
      bottleneck_ratio: the exit bottlenecks' inner width is C_deepest / ratio.
      version: ``None``, ``"iccv2019"`` or ``"journal"``: sets ``head`` and ``hint``
        as that version (:mod:`kdzoo.distill.self_distill.byot_versions`, which also holds its
        augmentation and schedule); an explicit contradicting value is an error.

    ``call`` returns the list of exit logits, shallow to deep. The deepest exit
    is the backbone's own ``head`` Dense layer when it has one after the last
    stage, else a new global-average-pool + Dense classifier.
    """

    def __init__(self, backbone, num_classes, exits=None, alpha=0.3, temperature=3.0,
                 feature_weight=0.03, mode="self_distillation", kd_scaling="official",
                 hint="official", hint_exits=None, head="bottleneck", bottleneck_ratio=4,
                 version=None, **kwargs):
        super().__init__(**kwargs)
        self.version = version
        head, hint = byot_versions.resolve(version, head, hint,
                                           {"head": "bottleneck", "hint": "official"})
        if not isinstance(backbone, keras.Model) or not hasattr(backbone, "inputs") \
                or backbone.inputs is None:
            raise TypeError("backbone must be a functional keras.Model (built with "
                            "keras.Input), e.g. kdzoo.load(...) or keras.applications.*.")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        for arg, value, allowed in (("kd_scaling", kd_scaling, KD_SCALINGS),
                                    ("hint", hint, HINTS), ("head", head, HEADS)):
            if value not in allowed:
                raise ValueError(f"{arg} must be one of {allowed}, got {value!r}.")
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
        self.kd_scaling, self.hint, self.head = kd_scaling, hint, head
        self._exits_arg = None if exits is None else [str(e) for e in exits]
        self.exit_names = self._resolve_exits(backbone, exits)
        self._hint_exits_arg = None if hint_exits is None else list(hint_exits)
        self.hint_exits = self._resolve_hint_exits(hint_exits, len(self.exit_names))
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
                raise ValueError(missing_exit_message(backbone, name))
        order = [layer_names.index(n) for n in names]
        if order != sorted(order):
            raise ValueError(f"Exit layers must be listed shallow to deep; got {names}.")
        return names

    def _resolve_hint_exits(self, hint_exits, n_exits):
        if hint_exits is None:
            last = n_exits - 1 if self.hint == "official" else n_exits
            return list(range(1, last))
        if isinstance(hint_exits, (str, int)):
            raise TypeError(f"hint_exits must be a list of 1-based shallow exit indices, "
                            f"got {hint_exits!r}.")
        values = list(hint_exits)
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool)
               or not 1 <= v < n_exits]
        if bad or len(set(values)) != len(values):
            raise ValueError(f"hint_exits must be distinct 1-based shallow exit indices in "
                             f"[1, {n_exits - 1}] (the deepest exit is the hint's target), "
                             f"got {values}.")
        return sorted(values)

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
        logits, hints = [], []
        use_hint = self.mode == "self_distillation"
        for i, f in enumerate(feats[:-1], start=1):
            b = exit_head(f, deep_shape, f"exit{i}_{self.head}", self.head,
                          self.bottleneck_ratio, path_shapes=shapes[i:])
            p = keras.layers.GlobalAveragePooling2D(name=f"exit{i}_pool")(b)
            logits.append(keras.layers.Dense(self.num_classes, name=f"exit{i}_classifier")(p))
            if use_hint and i in self.hint_exits:
                hints.append(keras.layers.Dense(int(deep_shape[-1]), name=f"exit{i}_adapter")(p)
                             if self.hint == "official" else
                             p if self.hint == "conference" else b)
        deep_logits = self._deepest_head(feats[-1])
        if deep_logits is None:
            p = keras.layers.GlobalAveragePooling2D(name=f"exit{n_exits}_pool")(feats[-1])
            deep_logits = keras.layers.Dense(self.num_classes,
                                             name=f"exit{n_exits}_classifier")(p)
        logits.append(deep_logits)
        target = feats[-1]
        if self.hint != "feature_maps":  # the authors' AvgPool2d(4, 4) of the 4x4 maps
            target = keras.layers.GlobalAveragePooling2D(name=f"exit{n_exits}_hint_pool")(target)
        self._hint_slots = self.hint_exits if use_hint else []
        self.network = keras.Model(bb.inputs, logits + hints + [target],
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
        """``(exit_logits, hint_features, hint_target)``.

        ``hint_features`` has one entry per shallow exit, ``None`` where it takes no
        hint; features and target are pooled (``hint="official"``, the features
        adapted; ``"conference"``) or feature maps (``"feature_maps"``).
        """
        outs = self.network(inputs, training=training)
        n = self.num_exits
        hints = [None] * (n - 1)
        for slot, tensor in zip(self._hint_slots, outs[n:-1]):
            hints[slot - 1] = tensor
        return list(outs[:n]), hints, outs[-1]

    @staticmethod
    def ensemble(exit_logits):
        """The ensemble's logits: the mean of the exit logits."""
        return ops.mean(ops.stack([ops.cast(z, "float32") for z in exit_logits]), axis=0)

    def compute_terms(self, labels, exit_logits, exit_features, deep_features,
                      sample_weight=None):
        return self_distillation_terms(
            labels, exit_logits, exit_features, deep_features, alpha=self.alpha,
            temperature=self.temperature, feature_weight=self.feature_weight,
            mode=self.mode, kd_scaling=self.kd_scaling, hint=self.hint,
            sample_weight=sample_weight)

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

    # ---- conveniences (see kdzoo.distill.self_distill.early_exit)
    def export_exit(self, index, name=None):
        """A standalone functional model: input -> logits of exit ``index`` (1-based)."""
        from kdzoo.distill.self_distill.early_exit import export_exit
        return export_exit(self, index, name=name)

    def export_network(self):
        """Refuses: a self-distilled network has several exits and no one deployable net.

        Why a method: :func:`kdzoo.to_plain_keras` asks the model which network is the
        deployable one rather than testing its class, so each method answers in its
        own file; here the answer is the caller's choice, named in the error.
        """
        raise TypeError(
            "to_plain_keras takes one network; for a SelfDistillation model pass "
            "model.export_exit(k) (exit k alone) or model.network (all exits).")

    def early_exit(self, thresholds):
        """An :class:`kdzoo.distill.self_distill.early_exit.EarlyExit` runner with these thresholds."""
        from kdzoo.distill.self_distill.early_exit import EarlyExit
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
            "kd_scaling": self.kd_scaling,
            "hint": self.hint,
            "hint_exits": self._hint_exits_arg,
            "head": self.head,
            "bottleneck_ratio": self.bottleneck_ratio,
            "version": self.version,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "hint" not in config:  # saved before kd_scaling / hint existed: kdzoo's old loss
            config.update(kd_scaling="t_squared", hint="feature_maps")
        config["backbone"] = keras.saving.deserialize_keras_object(
            config["backbone"], custom_objects=custom_objects)
        return cls(**config)
