"""Parallel first loads (issue 15, case 3): several real processes load one card at once
with an empty $KERAS_HOME, over a slow local HTTP download; all succeed with the same
weights, the file is fetched once, nobody deletes another's file, leftovers are cleaned."""

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
PROCESSES = 3

# Each process registers the same tiny BiT and a card for it (as tests/zoo/test_bad_files.py
# does), waits for the start signal, loads the card and prints a hash of its outputs.
LOADER = r"""
import hashlib, os, sys, time
import numpy as np
import kdzoo
from kdzoo.zoo import registry
from kdzoo.models.bit import build_bit
url, sha, go = sys.argv[1:4]
builder = lambda **kw: build_bit(50, 0.5, units=(1, 1, 1, 1), name="bit_tiny", **kw)
registry._ARCHITECTURES["bit_tiny"] = registry.Architecture(
    name="bit_tiny", builder=builder, input_size=32, num_classes=10, family="bit",
    description="a tiny BiT for tests")
cards = dict(registry.cards())
cards["bit_tiny.test_ckpt"] = dict(cards["bit_r50x1.funmatch_in1k_224"], name="bit_tiny.test_ckpt",
    architecture="bit_tiny", aliases=[], num_classes=10, input_size=32, url=url, sha256=sha)
registry.cards = lambda: cards
while not os.path.exists(go):
    time.sleep(0.01)
model = kdzoo.load("bit_tiny.test_ckpt")
images = np.random.default_rng(5).integers(0, 256, (2, 32, 32, 3)).astype("float32")
print("OUT", hashlib.sha256(np.asarray(model(images, training=False)).tobytes()).hexdigest())
"""


def _tiny_npz(path):
    """A tiny BiT checkpoint in big_vision's published .npz layout, random values."""
    from kdzoo.zoo.convert.bit_npz import _keys_for_layer
    from kdzoo.models.bit import build_bit
    # The processes' card is a copy of a FunMatch card: -inf stem max-pool padding.
    model = build_bit(50, 0.5, units=(1, 1, 1, 1), name="bit_tiny", num_classes=10,
                      input_shape=(32, 32, 3), stem_pool_padding="neg_inf")
    rng = np.random.default_rng(0)
    params = {key: (0.1 * rng.standard_normal(tuple(w.shape))).astype("float32")
              for layer in model.layers if layer.weights
              for key, w in zip(_keys_for_layer(layer.name, "big_vision"), layer.weights)}
    np.savez(path, **params)
    return model


class SlowServer(http.server.ThreadingHTTPServer):
    """Serves one file in 64 KB pieces, 50 ms apart: downloads overlap for seconds."""

    def __init__(self, payload):
        self.payload, self.requests = payload, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):
                self.requests += 1
                handler.send_response(200)
                handler.send_header("Content-Length", str(len(payload)))
                handler.end_headers()
                for i in range(0, len(payload), 1 << 16):
                    handler.wfile.write(payload[i:i + (1 << 16)])
                    time.sleep(0.05)

            def log_message(handler, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.slow
def test_parallel_first_loads_all_succeed_and_share_one_download(tmp_path):
    npz = tmp_path / "tiny.npz"
    model = _tiny_npz(str(npz))
    payload = npz.read_bytes()
    sha = hashlib.sha256(payload).hexdigest()
    server = SlowServer(payload)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/tiny.npz"
    home = tmp_path / "keras_home"
    # Leftovers of killed writers of these entries (and another entry's, to be kept).
    for sub, name in (("downloads", ".tmp-bit_tiny.test_ckpt-tiny.npz-dead"),
                      ("converted", ".tmp-bit_tiny.test_ckpt.weights.h5-deadbeef.weights.h5"),
                      ("converted", ".tmp-other.weights.h5-alive.weights.h5")):
        os.makedirs(home / "kdzoo" / sub, exist_ok=True)
        (home / "kdzoo" / sub / name).write_bytes(b"partial")
    go = tmp_path / "go"
    env = dict(ENV, KERAS_HOME=str(home))
    procs = [subprocess.Popen([sys.executable, "-c", LOADER, url, sha, str(go)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(PROCESSES)]
    time.sleep(1)
    go.write_text("")
    results = [p.communicate(timeout=600) for p in procs]
    server.shutdown()
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err[-3000:]

    # The expected outputs, independently: the same arrays assigned by key, here.
    from kdzoo.zoo.convert.bit_npz import load_bit_npz
    load_bit_npz(model, str(npz))
    images = np.random.default_rng(5).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    expected = hashlib.sha256(np.asarray(model(images, training=False)).tobytes()).hexdigest()
    assert [out.split("OUT ")[-1].strip() for out, _ in results] == [expected] * PROCESSES
    assert server.requests == 1  # one process downloaded, the others waited and reused it
    assert sorted(os.listdir(home / "kdzoo" / "downloads")) == ["bit_tiny.test_ckpt-tiny.npz"]
    assert sorted(os.listdir(home / "kdzoo" / "converted")) == [
        ".tmp-other.weights.h5-alive.weights.h5",  # another entry's: not ours to delete
        "bit_tiny.test_ckpt.weights.h5", "bit_tiny.test_ckpt.weights.h5.sha256"]
    assert (home / "kdzoo" / "downloads" / "bit_tiny.test_ckpt-tiny.npz").read_bytes() == payload
