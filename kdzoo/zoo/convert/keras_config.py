"""What a ``.keras`` config would allocate, bounded by its weights file, before Keras builds.

Keras builds every layer of a ``.keras`` file (allocating its variables) before it
reads a single weight. A 2.6 KB file whose ``Embedding`` claims ``input_dim=5e7``,
or whose ``Input`` is edited to ``[None, 100000]`` in front of a ``Dense``, makes it
allocate gigabytes and only then fail. This module walks ``config.json`` (iteratively,
so a deeply nested one cannot exhaust the stack), computes the parameters each sized
layer would create from its config and the input shapes recorded in the file
(``build_config``, the inbound tensors, the ``InputLayer`` it reads), and refuses a
file declaring more than its ``model.weights.h5`` stores. It also refuses an
``InputLayer`` whose shape disagrees with the shape its consumers were saved with
(an edited input), and a config nested deeper than any real model.
"""

import math

from kdzoo.errors import CheckpointError

MAX_DEPTH = 200  # JSON nesting; a real model's config (nested models too) stays far below
SLACK_PARAMS = 1 << 16
_CONV = {"Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
         "Conv3DTranspose"}
_NORM = {"BatchNormalization": 4, "LayerNormalization": 2, "GroupNormalization": 2,
         "RMSNormalization": 1}  # variables per channel
# Config fields that size a variable in layers kdzoo has no rule for (upper bound: their
# product times the input channels).
_SIZE_FIELDS = ("units", "filters", "input_dim", "output_dim", "num_heads", "key_dim",
                "value_dim", "depth_multiplier")


def config_depth(node):
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return deepest


def _layers(config):
    """Every ``(layer dict, sibling layer list, container class)`` in the config."""
    out, stack = [], [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            inner = node.get("config")
            layers = inner.get("layers") if isinstance(inner, dict) else None
            if isinstance(layers, list):
                out.extend((layer, layers, node.get("class_name")) for layer in layers
                           if isinstance(layer, dict))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _is_shape(value):
    return isinstance(value, list) and all(d is None or isinstance(d, int) for d in value)


def _shapes(value):
    """Every shape (list of int / None) inside ``value`` (a shape, or lists of them)."""
    if _is_shape(value) and value:
        return [value]
    if isinstance(value, (list, dict)):
        items = value.values() if isinstance(value, dict) else value
        return [s for item in items for s in _shapes(item)]
    return []


def _inbound(layer):
    """``[(producer name, recorded shape)]`` of a functional layer's inbound tensors."""
    found, stack = [], [layer.get("inbound_nodes") or []]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            cfg = node.get("config")
            if node.get("class_name") == "__keras_tensor__" and isinstance(cfg, dict):
                history = cfg.get("keras_history") or [None]
                found.append((history[0], cfg.get("shape")))
            else:
                stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def _ints(values):
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


def _params(cls, cfg, channels):
    """Parameters layer class ``cls`` with config ``cfg`` would create (0 if unknown)."""
    def size(*names):
        values = [cfg.get(n) for n in names]
        return math.prod(values) if _ints(values) else 0
    kernel = cfg.get("kernel_size")
    kernel = math.prod(kernel) if isinstance(kernel, list) and _ints(kernel) else (
        kernel if isinstance(kernel, int) else 1)
    groups = cfg.get("groups") if isinstance(cfg.get("groups"), int) and cfg["groups"] else 1
    if cls == "Dense":
        return size("units") * (channels + 1)
    if cls == "Embedding":
        return size("input_dim", "output_dim")
    if cls in _CONV:
        return kernel * size("filters") * (channels // groups + 1)
    if cls == "DepthwiseConv2D" or cls == "DepthwiseConv1D":
        return kernel * channels * (size("depth_multiplier") or 1)
    if cls in ("SeparableConv1D", "SeparableConv2D"):
        dm = size("depth_multiplier") or 1
        return kernel * channels * dm + channels * dm * size("filters")
    if cls in _NORM:
        return _NORM[cls] * channels
    fields = [cfg[n] for n in _SIZE_FIELDS if n in cfg]
    if fields and _ints(fields):
        return math.prod(fields) * max(channels, 1)
    return 0


def _input_layers(layers):
    return {layer.get("name") or (layer.get("config") or {}).get("name"): layer
            for layer in layers if layer.get("class_name") == "InputLayer"}


def _check_inputs(path, layer, siblings, container):
    """An edited ``InputLayer``: its shape must be the one its consumers were saved with."""
    inputs = _input_layers(siblings)
    consumed = [(name, shape) for name, shape in _inbound(layer) if name in inputs]
    if not consumed and container == "Sequential" and siblings.index(layer) > 0:
        previous = siblings[siblings.index(layer) - 1]
        if previous.get("class_name") == "InputLayer":
            saved = (layer.get("build_config") or {}).get("input_shape")
            consumed = [(previous.get("name") or previous["config"].get("name"), saved)]
    for name, saved in consumed:
        declared = (inputs[name].get("config") or {}).get("batch_shape")
        if _is_shape(saved) and _is_shape(declared) and list(saved) != list(declared):
            raise CheckpointError(
                f"{path}: input {name!r} declares shape {declared} in config.json, but "
                f"layer {layer.get('name')!r} was saved reading shape {saved}: the file "
                "was edited (it is damaged or hostile), and kdzoo built nothing from it. "
                "Save the model again with model.save.")


def check_declared_params(path, config, stored_params):
    """Refuse ``config`` if a layer (or all together) declares more than is stored."""
    if config_depth(config) > MAX_DEPTH:
        raise CheckpointError(
            f"{path}: its config.json nests more than {MAX_DEPTH} levels deep, far more "
            "than any model; the file is damaged or hostile, and kdzoo built nothing "
            "from it. Save the model again with model.save.")
    total, biggest = 0, (0, None, None)
    limit = stored_params + SLACK_PARAMS
    for layer, siblings, container in _layers(config):
        cls, cfg = layer.get("class_name"), layer.get("config")
        if not isinstance(cfg, dict):
            continue
        _check_inputs(path, layer, siblings, container)
        producers = _input_layers(siblings)
        shapes = _shapes((layer.get("build_config") or {}).get("input_shape"))
        for name, shape in _inbound(layer):
            shapes += _shapes(shape)
            if name in producers:
                shapes += _shapes((producers[name].get("config") or {}).get("batch_shape"))
        channels = max((s[-1] for s in shapes if isinstance(s[-1], int)), default=0)
        params = _params(cls, cfg, channels)
        total += params
        biggest = max(biggest, (params, cfg.get("name") or layer.get("name"), cls),
                      key=lambda t: t[0])
        if params > limit:
            break
    if total > limit:
        params, name, cls = biggest
        raise CheckpointError(
            f"{path}: its config declares {total:,} parameters (layer {name!r}, a {cls}, "
            f"alone {params:,}), but its model.weights.h5 stores only {stored_params:,} "
            "values: the config was edited (the file is damaged or hostile), and kdzoo "
            "built nothing from it. Save the model again with model.save.")
