"""Checks of Keras weight files from their headers, before anything is allocated.

A small hostile file can make a reader allocate gigabytes: a ``.keras`` config
whose head claims millions of units (Keras builds it before reading a single
weight), or an HDF5 dataset declared huge but never written (HDF5 returns its
fill value, so reading it allocates the declared size). These checks read
only headers (the zip directory, ``config.json``, HDF5 metadata) and refuse such
files naming the file and what is wrong, with no large allocation.
"""

import json
import zipfile

import h5py
import numpy as np
from keras.src.utils.naming import to_snake_case

from kdzoo.zoo.convert.keras_config import check_declared_params
from kdzoo.errors import CheckpointError

MAX_EXPANSION = 16  # a member / dataset may expand to this multiple of its stored size
SLACK = 1 << 20
MAX_CONFIG_BYTES = 64 << 20
# Layer classes whose first variable (the kernel) ends in the config's size field (not
# Conv*Transpose, whose kernel is (..., filters, in), nor SeparableConv*, whose first
# variable is the depthwise kernel: kdzoo.zoo.convert.keras_config bounds those).
_SIZED = {"Dense": "units", "Conv1D": "filters", "Conv2D": "filters", "Conv3D": "filters"}


def check_h5_datasets(group, path, max_bytes=None, where="", model_name=None):
    """Every dataset under ``group``: its declared size must be stored (and <= max_bytes)."""
    found = []
    group.visititems(lambda name, obj: found.append((name, obj))
                     if isinstance(obj, h5py.Dataset) else None)
    for name, ds in found:
        declared = int(ds.size) * ds.dtype.itemsize
        stored = int(ds.id.get_storage_size())
        limit = declared if ds.compression is None else MAX_EXPANSION * stored + SLACK
        if declared > SLACK and (stored < declared if ds.compression is None
                                 else declared > limit):
            raise CheckpointError(
                f"{path}: dataset {where}{name!r} declares shape {ds.shape} "
                f"({declared:,} bytes) but stores only {stored:,} bytes: the file is "
                "damaged or hostile, and kdzoo read none of it. Copy or download it "
                "again, or save it again with model.save_weights.")
        if max_bytes is not None and declared > max_bytes:
            raise CheckpointError(
                f"{path} does not fit {model_name}: its dataset {where}{name!r} has shape "
                f"{ds.shape} ({declared:,} bytes), larger than any weight of {model_name} "
                f"({max_bytes:,} bytes at most), so kdzoo did not read it. It was saved "
                "from another architecture or class count: pass the zoo name and "
                "num_classes it was saved with.")


def check_weights_file(path, model):
    """A ``.weights.h5`` file, checked against ``model`` before ``load_weights``."""
    biggest = max((int(np.prod(w.shape)) * 8 for w in model.weights),
                  default=0)  # 8: even float64 copies of the model's largest weight fit
    try:
        with h5py.File(path, "r") as f:
            check_h5_datasets(f, path, max_bytes=max(biggest, 1024), model_name=model.name)
    except CheckpointError:
        raise
    except (OSError, RuntimeError, ValueError):
        return  # not readable as HDF5: load_weights reports it as truncated or corrupt


def _sized_layers(config):
    """``[(class, name, size field, value)]`` of the top-level layers with a kernel size."""
    layers = (config.get("config") or {}).get("layers") or []
    out = []
    for layer in layers:
        cls = layer.get("class_name")
        field = _SIZED.get(cls)
        cfg = layer.get("config") or {}
        if field and isinstance(cfg.get(field), int):
            out.append((cls, cfg.get("name"), field, cfg[field]))
    return out


def _stored_values(group):
    """How many values the datasets under ``group`` hold (from the HDF5 headers)."""
    sizes = []
    group.visititems(lambda name, obj: sizes.append(int(obj.size))
                     if isinstance(obj, h5py.Dataset) else None)
    return sum(sizes)


def check_keras_archive(path):
    """A ``.keras`` zip: sizes, and every sized layer's config against its stored kernel."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # reported as truncated or corrupt by the reader
    with archive:
        infos = {info.filename: info for info in archive.infolist()}
        for info in infos.values():
            if info.file_size > MAX_EXPANSION * info.compress_size + SLACK:
                raise CheckpointError(
                    f"{path}: member {info.filename!r} claims to expand from "
                    f"{info.compress_size:,} to {info.file_size:,} bytes (a zip bomb?). "
                    "kdzoo read none of it; save the model again with model.save.")
        config_info = infos.get("config.json")
        if config_info is None or "model.weights.h5" not in infos:
            return  # the Keras reader says what is missing
        if config_info.file_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path}: its config.json is {config_info.file_size:,} "
                                  "bytes, far more than a model config; refused.")
        try:
            config = json.loads(archive.read(config_info))
        except RecursionError:
            raise CheckpointError(
                f"{path}: its config.json nests too deeply to be read (deeper than any "
                "model); the file is damaged or hostile, and kdzoo built nothing from "
                "it. Save the model again with model.save.") from None
        except (ValueError, zipfile.BadZipFile, OSError):
            return  # the Keras reader reports a broken config
        sized = _sized_layers(config)
        try:
            weights = h5py.File(archive.open("model.weights.h5"), "r")
        except (OSError, RuntimeError, ValueError, zipfile.BadZipFile):
            return
        with weights:
            check_h5_datasets(weights, path, where="model.weights.h5/")
            check_declared_params(path, config, _stored_values(weights))
            seen = {}
            for cls, name, field, value in sized:
                index = seen.get(cls, 0)
                seen[cls] = index + 1
                group = f"layers/{to_snake_case(cls)}" + (f"_{index}" if index else "")
                kernel = weights.get(f"{group}/vars/0")
                if kernel is None:
                    continue  # stored elsewhere (nested model): Keras checks it
                if not kernel.shape or kernel.shape[-1] != value:
                    raise CheckpointError(
                        f"{path}: layer {name!r} ({cls}) claims {field}={value:,} in its "
                        f"config, but its stored kernel has shape {kernel.shape}: the file "
                        "is damaged or hostile, and kdzoo built nothing from it. Save the "
                        "model again with model.save.")
