"""kdzoo.train.distribute: strategy names, batch splitting, logical CPUs, mirrored and
multi-worker training in subprocesses (loopback addresses only)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from kdzoo.train import distribute

pytestmark = pytest.mark.slow  # end-to-end: `make test-fast` skips this file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(**extra):
    env = dict(os.environ)
    env.pop("TF_CONFIG", None)
    env.update({"PYTHONPATH": REPO + os.pathsep + env.get("PYTHONPATH", ""),
                "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                "KERAS_BACKEND": "tensorflow"})
    env.update(extra)
    return env


def _run(script, timeout=240, **env):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO,
                          env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_auto_and_default_on_this_machine(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    if distribute.tpu_present() or len(tf.config.list_physical_devices("GPU")) > 1:
        pytest.skip("accelerators present")
    default = tf.distribute.get_strategy()
    assert distribute.get_strategy("auto") is default
    assert distribute.get_strategy("default") is default
    assert distribute.get_strategy(default) is default
    one = distribute.get_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.num_replicas_in_sync == 1


def test_unknown_strategy_did_you_mean():
    with pytest.raises(ValueError, match="Did you mean 'mirrored'"):
        distribute.get_strategy("mirored")
    with pytest.raises(ValueError, match="auto, default, mirrored"):
        distribute.get_strategy("spaceship")


def test_tpu_requested_without_tpu_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    if distribute.tpu_present():
        pytest.skip("a TPU is present")
    with pytest.raises(RuntimeError, match="no TPU"):
        distribute.get_strategy("tpu")


def test_tf_config_parsing(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
         "task": {"type": "worker", "index": 0}}))
    assert distribute.tf_config_cluster() == {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.tf_config_cluster()
    monkeypatch.delenv("TF_CONFIG")
    assert distribute.tf_config_cluster() == {}


def test_split_batch():
    assert distribute.split_batch(512, 8) == 64
    assert distribute.split_batch(10, tf.distribute.get_strategy()) == 10
    with pytest.raises(ValueError, match=r"not divisible by the 3 replicas.*\b9\b.*\b12\b"):
        distribute.split_batch(10, 3)
    with pytest.raises(ValueError, match="positive"):
        distribute.split_batch(0, 2)


def test_configure_logical_cpus_too_late_raises():
    tf.config.list_logical_devices("CPU")  # devices are initialised by now
    have = len(tf.config.list_logical_devices("CPU"))
    distribute.configure_logical_cpus(have)  # same count: no-op
    with pytest.raises(RuntimeError, match="before TensorFlow initialises"):
        distribute.configure_logical_cpus(have + 1)


MIRRORED = """
import json
import numpy as np
from kdzoo.train import distribute
distribute.configure_logical_cpus(2)
distribute.configure_logical_cpus(2)  # idempotent
import keras
import tensorflow as tf

def fit(strategy):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x @ np.arange(1, 5, dtype="float32"))[:, None]
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    model.fit(ds, epochs=3, verbose=0)
    return [w.tolist() for w in model.get_weights()]

mirrored = distribute.get_strategy("mirrored")
out = {"replicas": mirrored.num_replicas_in_sync,
       "devices": list(mirrored.extended.worker_devices),
       "per_replica": distribute.split_batch(16, mirrored),
       "mirrored": fit(mirrored), "default": fit(distribute.get_strategy("default"))}
print(json.dumps(out))
"""


def test_mirrored_over_two_logical_cpus_matches_default():
    out = _run(MIRRORED)
    assert out["replicas"] == 2 and len(out["devices"]) == 2
    assert out["per_replica"] == 8
    import numpy as np
    for a, b in zip(out["mirrored"], out["default"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


WORKER = """
import json, os
import numpy as np
from kdzoo.train import distribute
strategy = distribute.get_strategy("auto")
import keras
import tensorflow as tf
if os.environ.get("TF_CONFIG"):
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
else:
    assert strategy is tf.distribute.get_strategy()
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
y = (x @ np.arange(1, 5, dtype="float32"))[:, None]
global_batch = 16
per_replica = distribute.split_batch(global_batch, strategy)
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch).with_options(options)
history = model.fit(ds, epochs=2, verbose=0)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "per_replica": per_replica,
                  "loss": history.history["loss"],
                  "weights": [w.tolist() for w in model.get_weights()]}))
"""


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_mirrored_two_local_workers(tmp_path):
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    procs = []
    # Two workers plus a single-process reference run (no TF_CONFIG) in parallel.
    for index in range(3):
        extra = {}
        if index < 2:
            extra["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers},
                                             "task": {"type": "worker", "index": index}})
        err_path = tmp_path / f"proc{index}.err"
        with open(err_path, "w") as err:
            procs.append((subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(WORKER)], cwd=REPO,
                env=_env(**extra), stdout=subprocess.PIPE, stderr=err, text=True),
                err_path))
    outs = []
    try:
        for proc, err_path in procs:
            stdout, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, err_path.read_text()[-3000:]
            outs.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    import numpy as np
    *workers_out, single = outs
    assert single["replicas"] == 1 and single["per_replica"] == 16
    for out in workers_out:
        assert out["replicas"] == 2 and out["per_replica"] == 8
        assert len(out["loss"]) == 2 and out["loss"][1] < out["loss"][0]
        # Synchronous data parallelism over the global batch == one process.
        np.testing.assert_allclose(out["loss"], single["loss"], rtol=1e-4)
        for a, b in zip(out["weights"], single["weights"]):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_keras_multi_worker_patch_is_idempotent_and_leaves_other_strategies_alone():
    from keras.src.backend.tensorflow import trainer as tf_trainer
    assert distribute.patch_keras_multi_worker_fit()
    patched = tf_trainer.reduce_per_replica
    assert distribute.patch_keras_multi_worker_fit()
    assert tf_trainer.reduce_per_replica is patched
    # Not multi-worker: Keras' own reduction (a plain tensor passes through).
    value = tf.constant(3.0)
    assert float(patched({"loss": value}, tf.distribute.get_strategy(), "auto")["loss"]) == 3.0
