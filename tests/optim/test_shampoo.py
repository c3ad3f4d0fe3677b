"""kdzoo.optim.Shampoo against a NumPy Shampoo written here from the reference's
description (google-research scalable_shampoo/optax/distributed_shampoo.py), not
from kdzoo's code: blocks by index ranges, statistics by matrix products of the
unfolded block, roots by float64 eigh, mode products by moveaxis."""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import keras

from kdzoo.optim import Shampoo
from kdzoo.optim.matrix_roots import inverse_pth_root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------- NumPy reference
def np_merge(shape, bound):
    if all(d == 1 for d in shape):
        return [1]
    dims, acc = [], 1
    for d in shape:
        if acc * d > bound:
            if acc > 1:
                dims.append(acc)
            acc = d
        else:
            acc *= d
    return dims + ([acc] if acc > 1 else [])


def np_ranges(d, block):
    if block <= 0 or d <= block:
        return [(0, d)]
    return [(a, min(a + block, d)) for a in range(0, d, block)]


def np_root(a, p, eps):
    a = a.astype(np.float64)
    w, v = np.linalg.eigh(a)
    ridge = eps * max(w.max(), 1e-6)
    return (v * (np.maximum(w, 0) + ridge) ** (-1.0 / p)) @ v.T


def mode_product(x, m, axis):  # x x_axis m: contract x's axis with m's first index
    return np.moveaxis(np.tensordot(m.T, np.moveaxis(x, axis, 0), axes=1), 0, axis)


class NumpyShampoo:
    def __init__(self, shapes, lr, block, b1=0.9, b2=0.999, deps=1e-10, meps=1e-6,
                 start=5, every=1, graft="rmsprop_normalized", nesterov=True, wd=0.0,
                 max_dim=4096, min_rank=2, merge_bound=4096):
        self.__dict__.update(locals())
        self.t, self.state = 0, []
        for shape in shapes:
            st = dict(m=np.zeros(shape), mg=np.zeros(shape), v=np.zeros(shape))
            if len(shape) >= min_rank and max(shape) <= max_dim:
                ms = np_merge(shape, merge_bound)
                st["merged"] = ms
                st["blocks"] = list(itertools.product(*[np_ranges(d, block) for d in ms]))
                st["S"] = [[meps * np.eye(b - a) for a, b in blk] for blk in st["blocks"]]
                st["P"] = [[np.eye(b - a) for a, b in blk] for blk in st["blocks"]]
            self.state.append(st)

    def step(self, weights, grads):
        out = []
        for w, g, st in zip(weights, grads, self.state):
            g = g.astype(np.float64)
            if self.graft == "sgd":
                graft = g
            else:
                s = g / (np.linalg.norm(g) + 1e-16) if "normalized" in self.graft else g
                st["v"] = (st["v"] + s * s if self.graft.startswith("adagrad")
                           else self.b2 * st["v"] + (1 - self.b2) * s * s)
                graft = s / (np.sqrt(st["v"]) + self.deps)
            if "blocks" in st:
                gm, pg = g.reshape(st["merged"]), np.zeros(st["merged"])
                for i, blk in enumerate(st["blocks"]):
                    sl = tuple(slice(a, b) for a, b in blk)
                    x = gm[sl]
                    for k in range(x.ndim):
                        u = np.moveaxis(x, k, 0).reshape(x.shape[k], -1)
                        st["S"][i][k] = self.b2 * st["S"][i][k] + (1 - self.b2) * u @ u.T
                        if self.t % self.every == 0:
                            st["P"][i][k] = np_root(st["S"][i][k], 2 * x.ndim, self.meps)
                    y = x
                    for k in range(x.ndim):
                        y = mode_product(y, st["P"][i][k], k)
                    pg[sl] = y
                pg = pg.reshape(g.shape)
            else:
                pg = graft
            u = pg * np.linalg.norm(graft) / (np.linalg.norm(pg) + 1e-16)
            st["m"] = self.b1 * st["m"] + u
            st["mg"] = self.b1 * st["mg"] + graft
            shampoo = self.t >= self.start
            mom, cur = (st["m"], u) if shampoo else (st["mg"], graft)
            d = cur + self.b1 * mom if self.nesterov else mom
            out.append(w - self.lr * self.wd * w - self.lr * d)
        self.t += 1
        return out


def _run_both(shapes, steps=7, **kw):
    rng = np.random.RandomState(0)
    init = [rng.randn(*s).astype(np.float32) for s in shapes]
    grads = [[rng.randn(*s).astype(np.float32) for s in shapes] for _ in range(steps)]
    names = dict(b1="beta_1", b2="beta_2", start="start_preconditioning_step",
                 every="preconditioning_compute_steps", graft="graft_type", wd="weight_decay",
                 max_dim="skip_preconditioning_dim_size_gt",
                 min_rank="skip_preconditioning_rank_lt",
                 merge_bound="merge_small_dims_block_size", block="block_size",
                 lr="learning_rate", nesterov="nesterov")
    opt = Shampoo(**{names[k]: v for k, v in kw.items()})
    variables = [keras.Variable(w, name=f"w{i}") for i, w in enumerate(init)]
    opt.build(variables)
    apply = tf.function(lambda gs: opt.apply(gs, variables))  # graph mode
    ref = NumpyShampoo(shapes, **kw)
    expected = [w.astype(np.float64) for w in init]
    for gs in grads:
        apply([tf.constant(g) for g in gs])
        expected = ref.step(expected, gs)
    return [v.numpy() for v in variables], expected, init, opt


SHAPES = [(20, 12), (3, 3, 4, 10), (10,), (5, 50)]
# block 8: (20, 12) -> (8, 8, 4) x (8, 4) pieces, 6 blocks; merge bound 40:
# (3, 3, 4, 10) -> (36, 10) -> (8, 8, 8, 8, 4) x (8, 2) pieces, 10 blocks; (10,) and (5, 50) (a dim above max_dim=40) take the diagonal fallback.
COMMON = dict(lr=1e-3, block=8, start=3, every=3, wd=0.01, max_dim=40, merge_bound=40)


@pytest.mark.slow
@pytest.mark.parametrize("graft,nesterov", [("rmsprop_normalized", True), ("sgd", False),
                                            ("adagrad", True), ("rmsprop", False)])
def test_matches_numpy_reference(graft, nesterov):
    got, expected, init, _ = _run_both(SHAPES, graft=graft, nesterov=nesterov, **COMMON)
    for g, e, w0 in zip(got, expected, init):
        moved = np.abs(e - w0).max()
        assert moved > 1e-4  # the step is not trivially zero
        np.testing.assert_allclose(g - w0, e - w0, rtol=2e-3, atol=2e-3 * moved)


@pytest.mark.slow
def test_preconditioning_changes_the_update_after_the_start_step():
    # Same run with the preconditioner never started: only the grafting update.
    got, _, init, _ = _run_both(SHAPES[:2], **COMMON)
    base, _, _, _ = _run_both(SHAPES[:2], **dict(COMMON, start=100))
    for a, b, w0 in zip(got, base, init):
        assert np.abs((a - w0) - (b - w0)).max() > 1e-3 * np.abs(b - w0).max()


def test_state_layout_blocks_and_fallback():
    opt = Shampoo(block_size=8, skip_preconditioning_dim_size_gt=40,
                  merge_small_dims_block_size=40)
    opt.build([keras.Variable(np.zeros(s, np.float32)) for s in SHAPES])
    sizes = [[v.shape[0] for v in stats] for stats in opt._statistics]
    assert all(v.shape[0] == v.shape[1] for stats in opt._statistics for v in stats)
    # one statistic per axis per block, blocks in row-major order of the pieces
    assert sizes[0] == [8, 8, 8, 4, 8, 8, 8, 4, 4, 8, 4, 4]
    assert sizes[1] == [8, 8, 8, 2] * 4 + [4, 8, 4, 2]
    assert sizes[2] == [] and sizes[3] == []  # 1-D bias; a dim above 40


@pytest.mark.parametrize("p", [2, 4, 6])
def test_inverse_pth_root_against_eigendecomposition(p):
    rng = np.random.RandomState(p)
    x = rng.randn(12, 30)
    a = x @ x.T / 30
    root, ok = inverse_pth_root(tf.constant(a, tf.float32), p, ridge_epsilon=1e-6)
    root = np.asarray(root, np.float64)
    assert bool(ok)
    np.testing.assert_allclose(root, np_root(a, p, 1e-6), rtol=1e-4, atol=1e-5)
    damped = a + 1e-6 * np.linalg.eigvalsh(a).max() * np.eye(12)
    np.testing.assert_allclose(np.linalg.matrix_power(root, p) @ damped, np.eye(12),
                               atol=1e-3)


def test_bad_arguments_say_which():
    with pytest.raises(ValueError, match="graft_type must be one of"):
        Shampoo(graft_type="adam")
    with pytest.raises(ValueError, match="preconditioning_compute_steps must be an integer >= 1"):
        Shampoo(preconditioning_compute_steps=0)
    with pytest.raises(ValueError, match="beta_2"):
        Shampoo(beta_2=1.5)


def test_config_round_trip():
    opt = Shampoo(learning_rate=3e-4, block_size=64, graft_type="ADAGRAD",
                  start_preconditioning_step=10, preconditioning_compute_steps=4,
                  weight_decay=1e-4, nesterov=False, exponent_override=4)
    clone = Shampoo.from_config(opt.get_config())
    assert clone.get_config() == opt.get_config()
    assert (clone.graft_type, clone.block_size, clone.preconditioning_compute_steps,
            clone.nesterov, clone.exponent_override) == ("adagrad", 64, 4, False, 4)
    again = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert isinstance(again, Shampoo) and again.get_config() == opt.get_config()


# ------------------------------------------------- training runs (subprocess)
TRAIN_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from kdzoo.optim import Shampoo

    rng = np.random.RandomState(0)
    x = rng.randn(256, 8, 8, 3).astype("float32")
    y = (x[:, :4].mean((1, 2, 3)) > x[:, 4:].mean((1, 2, 3))).astype("int32")

    def model():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3),
                                 keras.layers.ReLU(), keras.layers.Flatten(),
                                 keras.layers.Dense(2)])

    def train(strategy=None, jit=True):
        with (strategy or tf.distribute.get_strategy()).scope():
            m = model()
            m.compile(Shampoo(3e-4, block_size=16, preconditioning_compute_steps=2,
                              weight_decay=1e-4),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=jit)
        h = m.fit(x, y, batch_size=32, epochs=4, verbose=0, shuffle=False)
        return m, [float(v) for v in h.history["loss"]]

    out = {}
    m, out["default"] = train()
    out["mirrored_replicas"] = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).num_replicas_in_sync
    # XLA cannot compile a step over variables on two devices (TF known issue)
    _, out["mirrored"] = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), jit=False)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    mb, out["mixed_bfloat16"] = train()
    out["bf16_compute"] = mb.layers[0].compute_dtype
    keras.mixed_precision.set_global_policy("float32")

    path = os.path.join(sys.argv[1], "m.keras")
    m.save(path)
    loaded = keras.models.load_model(path)
    out["loaded_type"] = type(loaded.optimizer).__name__
    out["same_config"] = loaded.optimizer.get_config() == m.optimizer.get_config()
    out["same_state"] = all(np.array_equal(a.numpy(), b.numpy()) for a, b in
                            zip(m.optimizer.variables, loaded.optimizer.variables))
    out["n_state"] = [len(m.optimizer.variables), len(loaded.optimizer.variables)]
    for mm in (m, loaded):
        mm.train_on_batch(x[:32], y[:32])
    out["same_next_step"] = all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in
                                zip(m.get_weights(), loaded.get_weights()))
    print("RESULT " + json.dumps(out))
''')


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT,
                           str(tmp_path_factory.mktemp("shampoo"))],
                          capture_output=True, text=True, env=env, timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["default", "mirrored", "mixed_bfloat16"])
def test_trains_a_small_model(training, setting):
    losses = training[setting]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < 0.8 * losses[0], losses
    assert training["mirrored_replicas"] == 2 and training["bf16_compute"] == "bfloat16"


@pytest.mark.slow
def test_save_and_load_a_compiled_model(training):
    assert training["loaded_type"] == "Shampoo" and training["same_config"]
    assert training["n_state"][0] == training["n_state"][1] > 10
    assert training["same_state"] and training["same_next_step"]
