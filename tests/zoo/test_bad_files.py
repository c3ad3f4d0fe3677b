"""Bad files: every checkpoint format x every way a file goes bad gets a clear error.

The matrix (``CASES`` below): format x {truncated, corrupt bytes, wrong shape,
wrong hash, code-carrying}. Each case asserts the exception type, that the
message names the file and that it says what to do; code-carrying cases also
prove that the file's code did not run (a sentinel file its payload would
create stays absent, while a deliberately unsafe load creates it).

=========== ========= ======= =========== ========== =============================
format      truncated corrupt wrong shape wrong hash code-carrying
=========== ========= ======= =========== ========== =============================
.npz        yes       yes     yes         yes (1)    yes: pickled object array
.weights.h5 yes       yes (2) yes         yes (3)    yes: legacy full-model .h5
                                                     with a Lambda, named .weights.h5
.keras      yes       yes     yes         n/a (4)    yes: Lambda layer (safe mode)
.tcache     yes       yes     yes (5)     yes (6)    yes: a pickle named .tcache (7)
=========== ========= ======= =========== ========== =============================

(1) a model card whose sha256 the downloaded file does not match: refused, and
    neither the download nor a converted file stays in $KERAS_HOME/kdzoo.
(2) broken HDF5 structure, and (separate case) weight bytes damaged into NaN.
    Damaged weight bytes that stay finite cannot be noticed in a file without a
    reference hash (HDF5 stores raw data without checksums), which is why the
    shipped and converted files carry a sha256: see (3) and
    ``test_corrupt_converted_cache_is_rebuilt``.
(3) a shipped ``keras_weights`` card whose file does not match its sha256.
(4) no model card or download refers to a ``.keras`` file, so there is no
    reference hash to mismatch; a damaged zip fails its CRC-32 (corrupt case).
(5) a re-signed header that describes another layout than the data holds.
(6) the header's recorded sha256 does not match the header.
(7) teacher caches are raw arrays read with ``np.memmap`` plus a JSON header;
    nothing in them is ever unpickled. The case checks that a pickle payload in
    a ``.tcache`` is refused as "not a cache" and never unpickled.

Run: python -m pytest tests/zoo/test_bad_files.py -q
"""

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile

import h5py
import keras
import numpy as np
import pytest

import kdzoo
from kdzoo.zoo import registry, loader as zoo
from kdzoo.zoo.convert.bit_npz import _keys_for_layer
from kdzoo.distill import cache_teacher
from kdzoo.distill.funmatch import FunMatchDistiller
from kdzoo.distill.funmatch.teacher_cache import _TRAILER
from kdzoo.errors import CheckpointError, DownloadError
from kdzoo.models.bit import tiny_bit

TINY = "bit_tiny"              # a 1-unit-per-block, half-width BiT registered by the fixture
TINY_CARD = "bit_tiny.test_ckpt"
TINY_SIZE = 32


class Payload:
    """Unpickling this creates ``path``: it stands for any code a pickle can run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def touching_lambda(sentinel):
    """A Python lambda that creates ``sentinel`` whenever it runs (builtins only, so it
    also runs after Keras has marshalled and unmarshalled its bytecode)."""
    return eval(f"lambda x: (open({str(sentinel)!r}, 'a').close(), x)[1]")


def cut(src, dst, fraction=0.5):
    data = open(src, "rb").read()
    open(dst, "wb").write(data[:int(len(data) * fraction)])
    return str(dst)


def overwrite(src, dst, offset, payload):
    data = bytearray(open(src, "rb").read())
    data[offset:offset + len(payload)] = payload
    open(dst, "wb").write(bytes(data))
    return str(dst)


def dataset_offset(h5_path):
    """``(offset, nbytes)`` of the largest weight array stored in an HDF5 file."""
    found = []
    with h5py.File(h5_path, "r") as f:
        f.visititems(lambda name, obj: found.append((obj.nbytes, obj.id.get_offset()))
                     if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" else None)
    nbytes, offset = max(found)
    assert offset is not None  # contiguous storage
    return offset, nbytes


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def files_under(directory):
    if not os.path.isdir(directory):
        return []
    return sorted(os.listdir(directory))


# ----------------------------------------------------------------- fixtures ---
def tiny_bit_builder(**kwargs):
    return tiny_bit(name=TINY, **kwargs)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good files of every format, written once; cases derive bad copies from them."""
    root = tmp_path_factory.mktemp("good")
    out = {"root": root, "sentinel": root / "code_ran"}
    # .npz: a tiny BiT in big_vision naming, random values everywhere (so a wrong
    # weight changes the logits).
    model = tiny_bit_builder(num_classes=10, input_shape=(TINY_SIZE, TINY_SIZE, 3))
    rng = np.random.default_rng(0)
    params = {}
    for layer in model.layers:
        if layer.weights:
            for key, w in zip(_keys_for_layer(layer.name, "big_vision"), layer.weights):
                params[key] = (0.1 * rng.standard_normal(tuple(w.shape))).astype("float32")
    out["params"] = params
    out["npz"] = str(root / "tiny.npz")
    np.savez(out["npz"], **params)
    # .weights.h5 and .keras of the Fashion-MNIST student (and its 2x wider teacher).
    w16 = kdzoo.load("fmnist_cnn_w16", weights=None)
    w32 = kdzoo.load("fmnist_cnn_w32", weights=None)
    for name, m in (("w16", w16), ("w32", w32)):
        out[f"{name}.weights.h5"] = str(root / f"{name}.weights.h5")
        m.save_weights(out[f"{name}.weights.h5"])
        out[f"{name}.keras"] = str(root / f"{name}.keras")
        m.save(out[f"{name}.keras"])
    # A model whose Lambda layer creates the sentinel when it runs.
    inputs = keras.Input((28, 28, 1))
    lam = keras.Model(inputs, w16(keras.layers.Lambda(touching_lambda(out["sentinel"]))(inputs)))
    out["lambda.keras"] = str(root / "lambda.keras")
    lam.save(out["lambda.keras"])
    out["lambda.h5"] = str(root / "lambda.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "legacy HDF5 format"
        lam.save(out["lambda.h5"])
    os.remove(out["sentinel"])  # building the model ran the lambda
    # .tcache: one epoch of 64 random images, batch 32, top 3 of 10 logits.
    teacher = kdzoo.load("fmnist_cnn_w16", weights=None)
    student = kdzoo.load("fmnist_cnn_w16", weights=None)
    d = FunMatchDistiller(teacher, student, variant="funmatch", image_size=28, seed=0)
    images = np.random.default_rng(1).integers(0, 256, (64, 28, 28, 1)).astype("uint8")
    out["tcache"] = str(root / "good.tcache")
    cache_teacher(d, images, out["tcache"], epochs=1, batch_size=32, top_k=3)
    out["distiller"] = d
    return out


@pytest.fixture
def env(files, tmp_path, monkeypatch):
    """``files`` plus a fresh $KERAS_HOME, the tiny BiT and its card (a file:// URL)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setitem(registry._ARCHITECTURES, TINY, registry.Architecture(
        name=TINY, builder=tiny_bit_builder, input_size=TINY_SIZE, num_classes=10,
        family="bit", description="a tiny BiT for tests"))
    cards = dict(registry.cards())
    card = dict(cards["bit_r50x1.funmatch_in1k_224"], name=TINY_CARD, architecture=TINY,
                aliases=[], num_classes=10, input_size=TINY_SIZE,
                url="file://" + files["npz"], sha256=sha256(files["npz"]))
    cards[TINY_CARD] = card
    monkeypatch.setattr(registry, "cards", lambda: cards)
    if os.path.exists(files["sentinel"]):
        os.remove(files["sentinel"])
    return dict(files, tmp=tmp_path, card=card, cards=cards, monkeypatch=monkeypatch)


def downloads():
    return files_under(os.path.join(zoo.cache_root(), "downloads"))


def converted():
    return files_under(os.path.join(zoo.cache_root(), "converted"))


# -------------------------------------------------------------------- cases ---
# Each case writes a bad file and returns (path, load, check_after). ``load``
# must raise; ``check_after`` (or None) asserts what must hold afterwards.
def load_tiny(path):
    return lambda: kdzoo.load(TINY, weights=path)


def load_w16(path):
    return lambda: kdzoo.load("fmnist_cnn_w16", weights=path)


def open_cache(env, path):
    return lambda: env["distiller"].use_teacher_cache(path)


def sentinel_absent(env):
    assert not os.path.exists(env["sentinel"]), "loading ran code from the file"


def npz_truncated(env):
    path = cut(env["npz"], env["tmp"] / "truncated.npz", 0.6)
    return path, load_tiny(path), None


def npz_corrupt(env):
    size = os.path.getsize(env["npz"])
    path = overwrite(env["npz"], env["tmp"] / "corrupt.npz", size // 2, b"\x5a" * 64)
    return path, load_tiny(path), None


def npz_wrong_shape(env):
    params = dict(env["params"])
    params["block2/unit01/conv2/kernel"] = np.zeros((3, 3, 64, 32), "float32")
    path = str(env["tmp"] / "wrong_shape.npz")
    np.savez(path, **params)
    return path, load_tiny(path), None


def npz_wrong_hash(env):
    env["card"]["sha256"] = "0" * 64

    def after(env):
        assert downloads() == [] and converted() == []

    return env["npz"], lambda: kdzoo.load(TINY_CARD), after


def npz_code(env):
    path = str(env["tmp"] / "pickled.npz")
    np.savez(path, evil=np.array([Payload(env["sentinel"])], dtype=object),
             **env["params"])

    def after(env):
        sentinel_absent(env)
        with np.load(path, allow_pickle=True) as unsafe:  # the file really carries code
            unsafe["evil"]
        assert os.path.exists(env["sentinel"])

    return path, load_tiny(path), after


def h5_truncated(env):
    path = cut(env["w16.weights.h5"], env["tmp"] / "truncated.weights.h5")
    return path, load_w16(path), None


def h5_corrupt(env):  # the HDF5 structure (superblock, root group) lives in the first 2 KB
    path = overwrite(env["w16.weights.h5"], env["tmp"] / "corrupt.weights.h5", 200,
                     b"\x5a" * 1000)
    return path, load_w16(path), None


def h5_corrupt_values(env):
    offset, nbytes = dataset_offset(env["w16.weights.h5"])
    path = overwrite(env["w16.weights.h5"], env["tmp"] / "nan.weights.h5", offset,
                     b"\xff" * 64)  # float32 0xffffffff is NaN
    return path, load_w16(path), None


def h5_wrong_shape(env):
    return env["w32.weights.h5"], load_w16(env["w32.weights.h5"]), None


def h5_wrong_hash(env):
    cards_dir = env["tmp"] / "cards"
    cards_dir.mkdir()
    good = sha256(env["w16.weights.h5"])
    shipped = dict(env["card"], name="fmnist_cnn_w16.test_shipped", architecture="fmnist_cnn_w16",
                   input_size=28, url=None, format="keras_weights", sha256=good,
                   file="fmnist_cnn_w16.test_shipped.weights.h5")
    replaced = str(cards_dir / shipped["file"])  # the shipped file, one weight changed
    shutil.copy(env["w16.weights.h5"], replaced)
    data = bytearray(open(replaced, "rb").read())
    offset, _ = dataset_offset(replaced)
    data[offset:offset + 4] = struct.pack("<f", 0.5)  # one finite weight changed
    open(replaced, "wb").write(bytes(data))
    assert sha256(replaced) != good
    env["cards"][shipped["name"]] = shipped
    env["monkeypatch"].setattr(registry, "CARDS_DIR", str(cards_dir))
    return replaced, lambda: kdzoo.load(shipped["name"]), None


def h5_code(env):
    path = str(env["tmp"] / "lambda_model.weights.h5")
    shutil.copy(env["lambda.h5"], path)

    def after(env):
        sentinel_absent(env)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            keras.saving.load_model(path, compile=False, safe_mode=False)
        assert os.path.exists(env["sentinel"])

    return path, load_w16(path), after


def keras_truncated(env):
    path = cut(env["w16.keras"], env["tmp"] / "truncated.keras")
    return path, load_w16(path), None


def keras_corrupt(env):
    size = os.path.getsize(env["w16.keras"])
    path = overwrite(env["w16.keras"], env["tmp"] / "corrupt.keras", size // 2, b"\x5a" * 64)
    return path, load_w16(path), None


def keras_wrong_shape(env):
    return env["w32.keras"], load_w16(env["w32.keras"]), None


def keras_code(env):
    def after(env):
        sentinel_absent(env)
        keras.saving.load_model(env["lambda.keras"], compile=False, safe_mode=False)
        assert os.path.exists(env["sentinel"])

    return env["lambda.keras"], load_w16(env["lambda.keras"]), after


def tcache_truncated(env):
    path = cut(env["tcache"], env["tmp"] / "truncated.tcache", 0.7)
    return path, open_cache(env, path), None


def tcache_corrupt(env):
    path = overwrite(env["tcache"], env["tmp"] / "corrupt.tcache", 40, b"\x5a" * 8)
    return path, open_cache(env, path), None


def _resigned(env, name, change):
    """The good cache with its JSON header changed and correctly re-signed."""
    data = open(env["tcache"], "rb").read()
    header_len, _, end = _TRAILER.unpack(data[-_TRAILER.size:])
    body = data[:-_TRAILER.size - header_len]
    header = json.loads(data[-_TRAILER.size - header_len:-_TRAILER.size])
    change(header)
    raw = json.dumps(header, sort_keys=True).encode()
    path = str(env["tmp"] / name)
    open(path, "wb").write(body + raw + _TRAILER.pack(len(raw), hashlib.sha256(raw).digest(),
                                                      end))
    return path


def tcache_wrong_shape(env):
    path = _resigned(env, "wrong_shape.tcache", lambda h: h.update(batch_size=16))
    return path, open_cache(env, path), None


def tcache_wrong_hash(env):
    size = os.path.getsize(env["tcache"])
    sha_at = size - _TRAILER.size + 8  # the header's sha256 in the trailer
    path = overwrite(env["tcache"], env["tmp"] / "wrong_hash.tcache", sha_at, b"\0" * 32)
    return path, open_cache(env, path), None


def tcache_code(env):
    path = str(env["tmp"] / "pickled.tcache")
    open(path, "wb").write(pickle.dumps(Payload(env["sentinel"])))

    def after(env):
        sentinel_absent(env)
        pickle.loads(open(path, "rb").read())  # the file really carries code
        assert os.path.exists(env["sentinel"])

    return path, open_cache(env, path), after


AGAIN = r"(download|copy|save) it again|Download it again"
CASES = {  # (format, case): (make, exception, what the message says, what to do)
    ("npz", "truncated"): (npz_truncated, CheckpointError, "truncated or corrupt", AGAIN),
    ("npz", "corrupt"): (npz_corrupt, CheckpointError, "truncated or corrupt", AGAIN),
    ("npz", "wrong_shape"): (npz_wrong_shape, CheckpointError,
                             r"'block2/unit01/conv2/kernel' has shape \(3, 3, 64, 32\)",
                             "pass the matching name"),
    ("npz", "wrong_hash"): (npz_wrong_hash, DownloadError, "does not match the sha256",
                            r"try again.*pass weights="),
    ("npz", "code"): (npz_code, CheckpointError, "pickled Python objects", "Re-save"),
    ("weights.h5", "truncated"): (h5_truncated, CheckpointError, "truncated or corrupt",
                                  AGAIN),
    ("weights.h5", "corrupt"): (h5_corrupt, CheckpointError, "truncated or corrupt", AGAIN),
    ("weights.h5", "corrupt_values"): (h5_corrupt_values, CheckpointError, "NaN or Inf",
                                       "Use another checkpoint"),
    ("weights.h5", "wrong_shape"): (h5_wrong_shape, CheckpointError,
                                    r"does not fit fmnist_cnn_w16.*shape",
                                    "pass the zoo name and num_classes"),
    ("weights.h5", "wrong_hash"): (h5_wrong_hash, CheckpointError,
                                   "does not match the sha256", "Reinstall kdzoo"),
    ("weights.h5", "code"): (h5_code, CheckpointError, "does not fit fmnist_cnn_w16",
                             "pass the zoo name"),
    ("keras", "truncated"): (keras_truncated, CheckpointError, "truncated or corrupt",
                             AGAIN),
    ("keras", "corrupt"): (keras_corrupt, CheckpointError, "Bad CRC-32.*truncated or corrupt",
                           AGAIN),
    ("keras", "wrong_shape"): (keras_wrong_shape, CheckpointError,
                               r"layer 's1_conv1' has weights of shapes \[\(3, 3, 1, 32\)",
                               "pass the zoo name and num_classes"),
    ("keras", "code"): (keras_code, CheckpointError, "carries Python code.*safe mode",
                        "without Lambda layers"),
    ("tcache", "truncated"): (tcache_truncated, CheckpointError, "truncated",
                              "Rebuild it with kdzoo.distill.cache_teacher"),
    ("tcache", "corrupt"): (tcache_corrupt, CheckpointError, "epoch 0 fails its sha256",
                            "Rebuild it with kdzoo.distill.cache_teacher"),
    ("tcache", "wrong_shape"): (tcache_wrong_shape, CheckpointError,
                                "the header describes", "Rebuild it"),
    ("tcache", "wrong_hash"): (tcache_wrong_hash, CheckpointError,
                               "header fails the sha256 check", "Rebuild it"),
    ("tcache", "code"): (tcache_code, CheckpointError, "not a kdzoo teacher cache",
                         "Pass a file written by kdzoo.distill.cache_teacher"),
}


@pytest.mark.parametrize("fmt,case", list(CASES), ids=[f"{f}-{c}" for f, c in CASES])
def test_bad_file_is_refused_naming_the_file_and_the_remedy(env, fmt, case):
    make, error, what, remedy = CASES[fmt, case]
    path, load, after = make(env)
    with pytest.raises(error) as info:
        load()
    message = str(info.value)
    assert str(path) in message, message
    assert re.search(what, message, re.S), message
    assert re.search(remedy, message, re.S), message
    if after is not None:
        after(env)


def test_the_good_files_load(env):
    """The controls: every case above breaks a file that loads fine untouched."""
    kdzoo.load(TINY, weights=env["npz"])
    kdzoo.load("fmnist_cnn_w16", weights=env["w16.weights.h5"])
    kdzoo.load("fmnist_cnn_w32", weights=env["w32.weights.h5"])
    kdzoo.load("fmnist_cnn_w16", weights=env["w16.keras"])
    assert env["distiller"].use_teacher_cache(env["tcache"]).epochs == (0, 1)
    env["distiller"].use_teacher_cache(None)
    kdzoo.load(TINY_CARD)  # the card's sha256 is right: downloaded and converted
    assert len(downloads()) == 1 and len(converted()) == 2  # weights + their sha256


def test_keras_file_loads_its_weights_into_the_named_architecture(env):
    source = keras.saving.load_model(env["w16.keras"], compile=False)
    images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1)).astype("float32")
    model = kdzoo.load("fmnist_cnn_w16", weights=env["w16.keras"])
    np.testing.assert_array_equal(model(images, training=False).numpy(),
                                  source(images, training=False).numpy())
    five = kdzoo.load("fmnist_cnn_w16", weights=env["w16.keras"], num_classes=5)
    assert five.output.shape[-1] == 5 and not five.get_layer("head").get_weights()[0].any()


def test_safe_mode_holds_even_when_unsafe_deserialization_is_enabled(env):
    from keras.src.backend.common import global_state
    before = global_state.get_global_attribute("safe_mode_saving")
    keras.config.enable_unsafe_deserialization()
    try:
        with pytest.raises(CheckpointError, match="carries Python code"):
            kdzoo.load("fmnist_cnn_w16", weights=env["lambda.keras"])
    finally:
        global_state.set_global_attribute("safe_mode_saving", before)
    sentinel_absent(env)


@pytest.mark.slow
def test_corrupt_converted_cache_is_rebuilt(env):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (2, TINY_SIZE, TINY_SIZE, 3)).astype("float32")
    expected = kdzoo.load(TINY_CARD)(images, training=False).numpy()
    path = os.path.join(zoo.cache_root(), "converted", f"{TINY_CARD}.weights.h5")
    good = open(path, "rb").read()
    offset, nbytes = dataset_offset(path)
    damaged = bytearray(good)
    damaged[offset:offset + nbytes] = b"\0" * nbytes  # finite: HDF5 alone cannot tell
    stale = env["tmp"] / "stale.weights.h5"
    stale.write_bytes(bytes(damaged))
    silently = kdzoo.load(TINY, weights=str(stale))(images, training=False).numpy()
    assert not np.allclose(silently, expected)  # loading it directly would go unnoticed
    for bad in (bytes(damaged), good[:len(good) // 2]):
        open(path, "wb").write(bad)
        again = kdzoo.load(TINY_CARD)(images, training=False).numpy()
        np.testing.assert_array_equal(again, expected)
        assert open(path, "rb").read() == good  # rebuilt from the download
    # Without the download and the network, a damaged converted file is refused, not used.
    open(path, "wb").write(bytes(damaged))
    os.remove(os.path.join(zoo.cache_root(), "downloads", downloads()[0]))
    env["card"]["url"] = "http://127.0.0.1:9/tiny.npz"
    with pytest.raises(DownloadError, match="127.0.0.1:9/tiny.npz"):
        kdzoo.load(TINY_CARD)
    assert converted() == [] and downloads() == []


def test_unusable_download_is_deleted_with_a_clear_error(env):
    """A card without a sha256 (as BiT's): a truncated download is caught by the reader."""
    source = cut(env["npz"], env["tmp"] / "partial.npz", 0.6)
    env["card"].update(url="file://" + source, sha256=None)
    with pytest.raises(CheckpointError) as info:
        kdzoo.load(TINY_CARD)
    target = os.path.join(zoo.cache_root(), "downloads", f"{TINY_CARD}-partial.npz")
    message = str(info.value)
    assert target in message and "truncated or corrupt" in message
    assert "downloads it afresh" in message
    assert downloads() == [] and converted() == []


# ------------------------------------------ hostile files (issue 15, case 5) ---
# Small files whose headers claim huge arrays. Each is loaded in one fresh process
# that records its peak RSS (ru_maxrss) before and after: a refusal must come
# from the headers, naming the file, without allocating what the header claims.
HOSTILE_LOADER = r"""
import json, resource, sys
import kdzoo
from kdzoo.zoo import registry
from kdzoo.models.bit import tiny_bit
builder = lambda **kw: tiny_bit(name="bit_tiny", **kw)
registry._ARCHITECTURES["bit_tiny"] = registry.Architecture(
    name="bit_tiny", builder=builder, input_size=32, num_classes=10, family="bit",
    description="a tiny BiT for tests")
good = json.loads(sys.argv[1])
for name, path in good.items():  # warm up every reader on a good file first
    kdzoo.load(name, weights=path)
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # MiB
for case, name, path in json.loads(sys.argv[2]):
    before = peak()
    try:
        kdzoo.load(name, weights=path)
        error, message = None, ""
    except Exception as e:
        error, message = type(e).__name__, str(e)
    print("CASE", json.dumps({"case": case, "error": error, "message": message,
                              "grew_mib": peak() - before}), flush=True)
"""
HOSTILE_LIMIT_MIB = 200


def _hostile_keras(src, dst):
    """A .keras whose head claims 4,000,000 units (a 1 GB kernel), weights untouched."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["config"]["name"] == "head":
                        layer["config"]["units"] = 4_000_000
                data = json.dumps(config).encode()
            zout.writestr(info, data)
    return str(dst)


def _hostile_h5(src, dst):
    """A .weights.h5 whose head kernel is a 1.5 GiB chunked dataset never written."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset)
                     and len(o.shape) == 2 else None)
        del f[names[0]]
        f.create_dataset(names[0], shape=(64, 6_291_456), dtype="float32", chunks=(64, 4096))
    return str(dst)


def _zip_bomb(dst, key="head/kernel", shape=(256, 1_048_576)):
    """An .npz holding 1 GiB of zeros deflated to about a megabyte, written in pieces."""
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open(key + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            zeros = bytes(1 << 22)
            for _ in range(int(np.prod(shape)) * 4 // len(zeros)):
                f.write(zeros)
    return str(dst)


def _lying_npz(dst):
    """A few hundred bytes whose .npy header claims 10^12 float32s."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (1_000_000, 1_000_000)})
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("head/kernel.npy", buf.getvalue() + bytes(64))
    return str(dst)


@pytest.mark.slow
def test_hostile_files_are_refused_from_their_headers_without_big_allocations(files, tmp_path):
    tmp = tmp_path
    cases = [
        ("keras_huge_head", "fmnist_cnn_w16", _hostile_keras(files["w16.keras"], tmp / "h.keras")),
        ("h5_unwritten_dataset", "fmnist_cnn_w16",
         _hostile_h5(files["w16.weights.h5"], tmp / "h.weights.h5")),
        ("npz_zip_bomb", "bit_tiny", _zip_bomb(tmp / "bomb.npz")),
        ("npz_lying_header", "bit_tiny", _lying_npz(tmp / "lie.npz")),
    ]
    assert all(os.path.getsize(p) < 2 << 20 for _, _, p in cases)  # small files (< 2 MiB)
    good = {"fmnist_cnn_w16": files["w16.keras"], "bit_tiny": files["npz"]}
    result = subprocess.run([sys.executable, "-c", HOSTILE_LOADER, json.dumps(good),
                             json.dumps(cases)], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {r["case"]: r for r in (json.loads(line[5:]) for line in result.stdout.splitlines()
                                   if line.startswith("CASE "))}
    assert sorted(seen) == sorted(c for c, _, _ in cases)
    for case, _, path in cases:
        row = seen[case]
        assert row["error"] == "CheckpointError", (case, row)
        assert path in row["message"], (case, row["message"])
        assert "truncated or corrupt" not in row["message"], (case, row["message"])
        assert row["grew_mib"] < HOSTILE_LIMIT_MIB, (case, row)
    print({case: seen[case]["grew_mib"] for case, _, _ in cases})  # peak RSS growth, MiB


def _npz_with(env, name, changes):
    params = dict(env["params"])
    for key, value in changes.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    path = str(env["tmp"] / name)
    np.savez(path, **params)
    return path


@pytest.mark.parametrize("dtype", ["int32", "bool", "complex64"])
def test_npz_kernels_that_are_not_floats_are_refused(env, dtype):
    kernel = env["params"]["block2/unit01/conv2/kernel"]
    path = _npz_with(env, f"{dtype}.npz", {"block2/unit01/conv2/kernel": kernel.astype(dtype)})
    with pytest.raises(CheckpointError, match=rf"{re.escape(path)}.*conv2/kernel.*{dtype}.*floats"):
        kdzoo.load(TINY, weights=path)


def test_npz_keys_that_meet_after_name_normalisation_are_refused(env):
    key = "block2/unit01/conv2/kernel"
    path = _npz_with(env, "dup.npz", {"params/" + key: env["params"][key] + 1})
    with pytest.raises(CheckpointError, match=rf"{re.escape(path)} has both .*same weight"):
        kdzoo.load(TINY, weights=path)


def test_npz_with_a_duplicated_member_is_refused(env):
    """zipfile (and np.load) would silently use the last copy of a repeated entry."""
    path = str(env["tmp"] / "twice.npz")
    np.savez(path, **env["params"])
    key = "block2/unit01/conv2/kernel"
    buf = io.BytesIO()
    np.lib.format.write_array(buf, env["params"][key] + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile: "Duplicate name"
        with zipfile.ZipFile(path, "a") as z:
            z.writestr(key + ".npy", buf.getvalue())
    with pytest.raises(CheckpointError, match=rf"{re.escape(path)} holds the entry .*twice"):
        kdzoo.load(TINY, weights=path)
