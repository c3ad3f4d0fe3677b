"""Published BiT ``.npz`` checkpoints -> kdzoo's Keras BiT models.

Two namings are understood: big_transfer's (``resnet/block1/unit01/a/
standardized_conv2d/kernel``, head stored as a 1x1 conv) and big_vision's
``bit_paper`` (``block1/unit01/conv1/kernel``, ``gn1/scale``, ``head/kernel``).
Validation is strict: every expected key present, every shape right, nothing
left over, else a :class:`~kdzoo.errors.CheckpointError` naming file and key.
Files are read with ``allow_pickle=False``: loading never executes code.
"""

import os
import re
import zipfile
import zlib

import numpy as np

from kdzoo.errors import CheckpointError

_UNIT_LAYER = re.compile(r"^block(\d)_unit(\d\d)_(a|b|c|a_proj)_(conv|gn)$")


def read_npz(path):
    """All arrays of an ``.npz`` file, read eagerly so truncation shows up here."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file {path} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise CheckpointError(
                f"{path} holds pickled Python objects; kdzoo refuses to load them because "
                "unpickling can execute code. Re-save the arrays as plain numeric arrays.") from e
        raise CheckpointError(f"{path} is not a valid .npz checkpoint ({e}). Download it "
                              "again, or pass a published BiT .npz file.") from e
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile, zlib.error) as e:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({e.__class__.__name__}: {e}). Delete it and "
            "download it again.") from e


def _normalise_keys(params):
    """Drop a leading ``params/`` and the odd ``standardized_conv2d_N`` spelling."""
    out = {}
    for key, value in params.items():
        key = key[len("params/"):] if key.startswith("params/") else key
        key = re.sub(r"/standardized_conv2d_\d+/", "/standardized_conv2d/", key)
        out[key] = value
    return out


def detect_naming(keys, path="<checkpoint>"):
    keys = set(keys)
    if "resnet/root_block/standardized_conv2d/kernel" in keys:
        return "big_transfer"
    if "root_block/conv_root/kernel" in keys:
        return "big_vision"
    raise CheckpointError(
        f"{path} is not a BiT checkpoint: it has neither "
        "'resnet/root_block/standardized_conv2d/kernel' (big_transfer) nor "
        "'root_block/conv_root/kernel' (big_vision). First keys: "
        f"{sorted(keys)[:5]}")


def _keys_for_layer(layer_name, naming):
    """Checkpoint keys of one Keras layer, in the layer's weight order."""
    bt = naming == "big_transfer"
    if layer_name == "root_conv":
        return ["resnet/root_block/standardized_conv2d/kernel" if bt else "root_block/conv_root/kernel"]
    if layer_name == "pre_head_gn":
        return (["resnet/group_norm/gamma", "resnet/group_norm/beta"] if bt
                else ["norm-pre-head/scale", "norm-pre-head/bias"])
    if layer_name == "head":
        return (["resnet/head/conv2d/kernel", "resnet/head/conv2d/bias"] if bt
                else ["head/kernel", "head/bias"])
    match = _UNIT_LAYER.match(layer_name)
    if not match:
        return None
    block, unit, part, kind = match.groups()
    prefix = f"resnet/block{block}/unit{unit}/" if bt else f"block{block}/unit{unit}/"
    if bt:
        if kind == "gn":
            return [prefix + f"{part}/group_norm/gamma", prefix + f"{part}/group_norm/beta"]
        part_path = "a/proj" if part == "a_proj" else part
        return [prefix + f"{part_path}/standardized_conv2d/kernel"]
    index = {"a": 1, "b": 2, "c": 3}.get(part)
    if kind == "gn":
        return [prefix + f"gn{index}/scale", prefix + f"gn{index}/bias"]
    return [prefix + ("conv_proj/kernel" if part == "a_proj" else f"conv{index}/kernel")]


def _squeeze_leading_ones(value, target, key, layer, model, path):
    """Accept the storage conventions [1,1,1,C] (GN) and [1,1,C,K] (head as 1x1 conv)."""
    extra = value.ndim - len(target)
    if extra > 0 and value.shape[:extra] == (1,) * extra and value.shape[extra:] == target:
        return value.reshape(target)
    raise CheckpointError(
        f"{path}: key {key!r} has shape {value.shape}, but layer {layer.name!r} of "
        f"{model.name} needs {target}. The checkpoint belongs to another architecture or "
        "class count: pass the matching name (kdzoo.list_models('bit_*')) and num_classes.")


def checkpoint_num_classes(params):
    """Number of classes of a checkpoint's head, or None if it has no head."""
    params = _normalise_keys(params)
    for key in ("resnet/head/conv2d/bias", "head/bias"):
        if key in params:
            return int(params[key].shape[-1])
    return None


def assign_bit_weights(model, params, path="<checkpoint>"):
    """Copy checkpoint arrays into ``model`` after strict key and shape validation."""
    params = _normalise_keys(params)
    naming = detect_naming(params, path)
    assignments = []
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        keys = _keys_for_layer(layer.name, naming)
        if keys is None:
            raise CheckpointError(f"Layer {layer.name!r} of {model.name} has no BiT checkpoint key.")
        values = []
        for key, variable in zip(keys, layer.weights):
            if key not in params:
                raise CheckpointError(f"{path} lacks the key {key!r} needed by layer {layer.name!r}.")
            value = np.asarray(params[key])
            target = tuple(variable.shape)
            if value.shape != target:
                value = _squeeze_leading_ones(value, target, key, layer, model, path)
            if not np.all(np.isfinite(value)):
                raise CheckpointError(f"{path}: key {key!r} holds NaN or Inf values.")
            values.append(value)
            used.add(key)
        assignments.append((layer, values))
    extra = sorted(set(params) - used)
    if extra:
        raise CheckpointError(
            f"{path} has {len(extra)} key(s) that {model.name} does not use, e.g. {extra[:3]}. "
            "Is it a checkpoint of a deeper or wider BiT model?")
    for layer, values in assignments:
        layer.set_weights(values)
    return naming


def load_bit_npz(model, path):
    """Read ``path`` and load it into ``model`` (see :func:`assign_bit_weights`)."""
    return assign_bit_weights(model, read_npz(path), path=os.fspath(path))
