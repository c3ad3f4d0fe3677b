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
from collections.abc import Mapping

import numpy as np

from kdzoo.errors import CheckpointError

_UNIT_LAYER = re.compile(r"^block(\d)_unit(\d\d)_(a|b|c|a_proj)_(conv|gn)$")


# A member may expand to at most this multiple of its compressed size (+ 1 MiB):
# float weights barely compress (np.savez does not even try), zip bombs do.
MAX_EXPANSION = 16


class NpzArrays(Mapping):
    """The arrays of an ``.npz`` checkpoint, checked from the headers, read on access.

    Opening reads only the zip directory and each member's ``.npy`` header:
    names, dtypes and shapes are checked (see :func:`read_npz`) before any
    array data is allocated, so a hostile file is refused at the cost of a
    few bytes. ``shape(key)`` / ``dtype(key)`` answer from the header.
    """

    def __init__(self, path, headers, extra=None):
        self.path = path
        self._headers = headers          # key -> (member name, shape, dtype)
        self._extra = dict(extra or {})  # in-memory arrays (e.g. a fresh head)

    def __iter__(self):
        return iter(list(self._headers) + [k for k in self._extra if k not in self._headers])

    def __len__(self):
        return len(set(self._headers) | set(self._extra))

    def shape(self, key):
        return tuple(self._extra[key].shape) if key in self._extra else self._headers[key][1]

    def dtype(self, key):
        return np.asarray(self._extra[key]).dtype if key in self._extra else self._headers[key][2]

    def __getitem__(self, key):
        if key in self._extra:
            return self._extra[key]
        member = self._headers[key][0]
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(member) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
            raise CheckpointError(
                f"{self.path} is truncated or corrupt: array {key!r} cannot be read "
                f"({e.__class__.__name__}: {e}). Delete it and download it again.") from e

    def with_arrays(self, arrays):
        """A copy with ``arrays`` added (or replacing same-named ones)."""
        return NpzArrays(self.path, self._headers, dict(self._extra, **arrays))


def _member_header(archive, info, path):
    """``(shape, dtype)`` from one member's ``.npy`` header, checked against its sizes."""
    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
    if info.file_size > MAX_EXPANSION * info.compress_size + (1 << 20):
        raise CheckpointError(
            f"{path}: entry {key!r} claims to expand from {info.compress_size} to "
            f"{info.file_size} bytes, far more than weights compress: the file is a zip "
            "bomb or not a checkpoint. kdzoo read none of it; pass a published BiT .npz.")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        header_len = f.tell()
    if dtype.hasobject:
        raise CheckpointError(
            f"{path} holds pickled Python objects (entry {key!r}); kdzoo refuses to load "
            "them because unpickling can execute code. Re-save the arrays as plain "
            "numeric arrays.")
    count = 1
    for dim in shape:
        count *= int(dim)
    if header_len + count * dtype.itemsize != info.file_size:
        raise CheckpointError(
            f"{path}: the header of entry {key!r} claims {shape} {dtype} "
            f"({count * dtype.itemsize:,} bytes), but the entry holds "
            f"{info.file_size - header_len:,} bytes of data: the file is damaged or "
            "hostile, and kdzoo read none of it. Download it again, or pass a published "
            "BiT .npz file.")
    return tuple(int(d) for d in shape), dtype


def read_npz(path):
    """The arrays of an ``.npz`` file as :class:`NpzArrays`, checked from the headers.

    Every member's size, dtype and shape come from the zip directory and the
    ``.npy`` header; the data is only read when an array is used, after the
    keys and shapes have been matched to a model (:func:`assign_bit_weights`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file {path} does not exist.")
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in headers:  # zipfile and np.load would silently use the last copy
                    raise CheckpointError(
                        f"{path} holds the entry {info.filename!r} twice: kdzoo cannot "
                        "tell which copy is meant, so it read neither. The file is damaged "
                        "or hostile: download it again, or pass a published BiT .npz.")
                shape, dtype = _member_header(archive, info, path)
                headers[key] = (info.filename, shape, dtype)
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(f"{path} is not a valid .npz checkpoint ({e}). Download it "
                              "again, or pass a published BiT .npz file.") from e
    except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile, zlib.error) as e:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({e.__class__.__name__}: {e}). Delete it and "
            "download it again.") from e
    return NpzArrays(path, headers)


def _normalised_names(params, path):
    """``{normalised key: key}``: drop a leading ``params/`` and the odd
    ``standardized_conv2d_N`` spelling; two keys meeting in one name are refused."""
    out = {}
    for key in params:
        name = key[len("params/"):] if key.startswith("params/") else key
        name = re.sub(r"/standardized_conv2d_\d+/", "/standardized_conv2d/", name)
        if name in out:
            raise CheckpointError(
                f"{path} has both {out[name]!r} and {key!r}, which name the same weight "
                f"{name!r}: kdzoo cannot tell which one is meant. Keep one of them.")
        out[name] = key
    return out


def _shape(params, key):
    return params.shape(key) if isinstance(params, NpzArrays) else tuple(np.shape(params[key]))


def _dtype(params, key):
    return params.dtype(key) if isinstance(params, NpzArrays) else np.asarray(params[key]).dtype


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


def _squeezable(shape, target, key, layer, model, path):
    """Accept the storage conventions [1,1,1,C] (GN) and [1,1,C,K] (head as 1x1 conv)."""
    extra = len(shape) - len(target)
    if extra > 0 and tuple(shape[:extra]) == (1,) * extra and tuple(shape[extra:]) == target:
        return
    raise CheckpointError(
        f"{path}: key {key!r} has shape {tuple(shape)}, but layer {layer.name!r} of "
        f"{model.name} needs {target}. The checkpoint belongs to another architecture or "
        "class count: pass the matching name (kdzoo.list_models('bit_*')) and num_classes.")


def checkpoint_num_classes(params):
    """Number of classes of a checkpoint's head, or None if it has no head."""
    names = _normalised_names(params, getattr(params, "path", "<checkpoint>"))
    for key in ("resnet/head/conv2d/bias", "head/bias"):
        if key in names:
            shape = _shape(params, names[key])
            return int(shape[-1]) if shape else None
    return None


def assign_bit_weights(model, params, path="<checkpoint>"):
    """Copy checkpoint arrays into ``model`` after strict key, dtype and shape validation.

    Every key, dtype and shape is checked first (from the headers, for a file
    read by :func:`read_npz`); array data is read only once all of them fit.
    """
    names = _normalised_names(params, path)
    naming = detect_naming(names, path)
    plan = []
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        keys = _keys_for_layer(layer.name, naming)
        if keys is None:
            raise CheckpointError(f"Layer {layer.name!r} of {model.name} has no BiT checkpoint key.")
        for key, variable in zip(keys, layer.weights):
            if key not in names:
                raise CheckpointError(f"{path} lacks the key {key!r} needed by layer {layer.name!r}.")
            dtype = np.dtype(_dtype(params, names[key]))
            if dtype.kind != "f":
                raise CheckpointError(
                    f"{path}: key {key!r} holds {dtype} values; weights must be floats "
                    "(float16/32/64). The file is not a BiT checkpoint or was written "
                    "wrongly: re-save the arrays as float32.")
            shape, target = _shape(params, names[key]), tuple(variable.shape)
            if shape != target:
                _squeezable(shape, target, key, layer, model, path)
            used.add(key)
        plan.append((layer, keys))
    extra = sorted(set(names) - used)
    if extra:
        raise CheckpointError(
            f"{path} has {len(extra)} key(s) that {model.name} does not use, e.g. {extra[:3]}. "
            "Is it a checkpoint of a deeper or wider BiT model?")
    for layer, keys in plan:
        values = []
        for key, variable in zip(keys, layer.weights):
            value = np.asarray(params[names[key]]).reshape(tuple(variable.shape))
            if not np.all(np.isfinite(value)):
                raise CheckpointError(f"{path}: key {key!r} holds NaN or Inf values.")
            values.append(value)
        layer.set_weights(values)
    return naming


def load_bit_npz(model, path):
    """Read ``path`` and load it into ``model`` (see :func:`assign_bit_weights`)."""
    return assign_bit_weights(model, read_npz(path), path=os.fspath(path))
