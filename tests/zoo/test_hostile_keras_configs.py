"""``.keras`` files whose config declares far more than their weights hold.

Keras builds a ``.keras`` model (allocating every variable) before it reads a weight, so
a few-KB file with an ``Embedding(input_dim=50_000_000)`` or an ``Input`` edited to
``[None, 100000]`` in front of a wide ``Dense`` allocated ~8 GB and failed after 40 s.
kdzoo now bounds what the config declares by what ``model.weights.h5`` stores, from
headers only. Each hostile file is loaded in a fresh process that records its peak RSS
(``ru_maxrss``) before and after: the refusal must name the file and the layer, and
grow the peak by < 500 MiB (the 8 GB build would grow it by gigabytes). Controls: the
same models unedited (and kdzoo's own models) pass the check.
"""

import json
import os
import subprocess
import sys
import zipfile

import keras
import pytest

import kdzoo
from kdzoo.zoo.convert.headers import check_keras_archive
from kdzoo.errors import CheckpointError
from kdzoo.models.bit import build_bit

LIMIT_MIB = 500
LOADER = r"""
import json, resource, sys, time
import kdzoo
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # MiB
kdzoo.load("fmnist_cnn_w16", weights=sys.argv[1])  # warm every reader up on a good file
for case, path in json.loads(sys.argv[2]):
    before, start = peak(), time.monotonic()
    try:
        kdzoo.load("fmnist_cnn_w16", weights=path)
        error, message = None, ""
    except BaseException as e:
        error, message = type(e).__name__, str(e)
    print("CASE", json.dumps({"case": case, "error": error, "message": message[:2000],
          "grew_mib": peak() - before, "seconds": time.monotonic() - start}), flush=True)
"""


def _embedding_model():
    inputs = keras.Input((10,), dtype="int32")
    x = keras.layers.Embedding(1000, 40, name="tokens")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(keras.layers.Flatten()(x)))


def _dense_model():
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(20_000, name="wide")(inputs))


def _mixed_model():
    """Stock layers with every sizing rule, one nested model: a control."""
    inner_in = keras.Input((8, 8, 16))
    inner = keras.Model(inner_in, keras.layers.LayerNormalization()(
        keras.layers.SeparableConv2D(24, 3, padding="same")(inner_in)), name="inner")
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GroupNormalization(4)(x)
    x = inner(x)
    x = keras.layers.Conv2DTranspose(8, 3)(x)
    return keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x)))


def _edited(src, dst, edit):
    """A copy of the ``.keras`` zip ``src`` whose config.json went through ``edit``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "config.json":
                data = edit(data.decode()).encode()
            zout.writestr(info, data)
    return str(dst)


def _set(layer_name, field, value):
    def edit(text):
        config = json.loads(text)
        for layer in config["config"]["layers"]:
            if layer["name"] == layer_name:
                layer["config"][field] = value
        return json.dumps(config)
    return edit


def _input_everywhere(text):
    """The Input edited to [None, 100000] and, consistently, every shape recorded after it."""
    return text.replace("[null, 8]", "[null, 100000]")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("keras_configs")
    out = {}
    for name, build in (("embedding", _embedding_model), ("dense", _dense_model),
                        ("mixed", _mixed_model)):
        out[name] = str(root / f"{name}.keras")
        build().save(out[name])
    tiny = build_bit(50, 0.5, units=(1, 1, 1, 1), name="bit_tiny", num_classes=10,
                     input_shape=(32, 32, 3))
    out["bit"] = str(root / "bit.keras")
    tiny.save(out["bit"])
    out["w16"] = str(root / "w16.keras")
    kdzoo.load("fmnist_cnn_w16", weights=None).save(out["w16"])
    out["root"] = root
    return out


def test_unedited_models_pass_the_check(saved):
    for name in ("embedding", "dense", "mixed", "bit", "w16"):
        check_keras_archive(saved[name])  # no error: the declared sizes are all stored


def test_an_input_edited_alone_is_refused_naming_it(saved):
    path = _edited(saved["dense"], saved["root"] / "input_only.keras", lambda t: t.replace(
        '"batch_shape": [null, 8]', '"batch_shape": [null, 100000]'))
    with pytest.raises(CheckpointError, match=r"input_only\.keras: input .* declares shape "
                                              r"\[None, 100000\].*'wide'.*\[None, 8\]"):
        check_keras_archive(path)


def _deep(src, dst, levels=200_000):
    return _edited(src, dst, lambda _: '{"a": ' * levels + "1" + "}" * levels)


@pytest.mark.slow
def test_hostile_configs_are_refused_fast_with_bounded_memory(saved):
    root = saved["root"]
    cases = [
        ("embedding_input_dim", _edited(saved["embedding"], root / "emb.keras",
                                        _set("tokens", "input_dim", 50_000_000)), "tokens"),
        ("dense_input_shape", _edited(saved["dense"], root / "inp.keras", _input_everywhere),
         "wide"),
        ("deep_config", _deep(saved["embedding"], root / "deep.keras"), "nests"),
    ]
    assert os.path.getsize(cases[0][1]) < 200_000  # a small file
    result = subprocess.run(
        [sys.executable, "-c", LOADER, saved["w16"], json.dumps([c[:2] for c in cases])],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["case"]: r for r in (json.loads(line[5:]) for line in result.stdout.splitlines()
                                   if line.startswith("CASE "))}
    assert sorted(rows) == sorted(c[0] for c in cases), result.stdout[-2000:]
    for case, path, named in cases:
        row = rows[case]
        assert row["error"] == "CheckpointError", (case, row)
        assert path in row["message"] and named in row["message"], (case, row["message"])
        assert row["grew_mib"] < LIMIT_MIB, (case, row)
        assert row["seconds"] < 10, (case, row)
    print({case: (rows[case]["grew_mib"], round(rows[case]["seconds"], 2)) for case, *_ in cases})
