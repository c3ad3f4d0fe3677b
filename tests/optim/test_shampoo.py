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
