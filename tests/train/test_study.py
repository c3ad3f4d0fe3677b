"""Studies: class-balanced subsets, the runs' subset/split options, per-group summaries,
and the committed evidence of the Fashion-MNIST study."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from kdzoo.train import study
from kdzoo.data.subset import balanced_indices, balanced_subset

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EVIDENCE = os.path.join(ROOT, "docs", "results", "fashion_mnist_small_data.json")


def test_balanced_indices_draw_per_class_examples_reproducibly():
    labels = np.repeat(np.arange(4), [5, 7, 3, 9])
    picked = balanced_indices(labels, 3, seed=1)
    assert np.bincount(labels[picked]).tolist() == [3, 3, 3, 3]
    assert len(set(picked.tolist())) == 12 and np.all(np.diff(picked) > 0)
    assert np.array_equal(picked, balanced_indices(labels, 3, seed=1))
    assert not np.array_equal(picked, balanced_indices(labels, 3, seed=2))
    with pytest.raises(ValueError, match="class 2 has only 3"):
        balanced_indices(labels, 4)
    with pytest.raises(ValueError, match="train_per_class"):
        balanced_indices(labels, 0)


def test_balanced_subset_keeps_the_chosen_examples_in_order():
    labels = np.array([0, 1, 0, 1, 0, 1, 2, 2], np.int32)
    images = np.arange(8, dtype=np.uint8).reshape(8, 1, 1, 1)
    subset, n = balanced_subset(tf.data.Dataset.from_tensor_slices((images, labels)), 2, seed=0)
    got = list(subset.as_numpy_iterator())
    expected = balanced_indices(labels, 2, seed=0)
    assert n == 6 and int(subset.cardinality()) == 6
    assert [int(x.ravel()[0]) for x, _ in got] == expected.tolist()
    assert [int(y) for _, y in got] == labels[expected].tolist()


def test_runs_plan_the_subset_and_the_train_split_override():
    from kdzoo.train import SupervisedRun, plan
    base = dict(dataset="fashion_mnist", model=None, optimizer=None, workdir="/tmp/x",
                batch_size=128)
    # By hand: 100 per class x 10 classes = 1,000 images; round(300 * 1000 / 128) = 2344.
    _, info = plan(SupervisedRun(epochs=300, train_per_class=100, **base))
    assert (info["train_examples"], info["total_steps"]) == (1000, 2344)
    _, info = plan(SupervisedRun(epochs=1, train_split="train", **base))
    assert info["train_examples"] == 60_000
    _, info = plan(SupervisedRun(epochs=1, **base))
    assert info["train_examples"] == 55_000


def test_summarize_groups_by_method_and_budget():
    rows = [dict(method="a", epochs=10, top1=80.0, agreement=90.0),
            dict(method="a", epochs=10, top1=84.0, agreement=92.0),
            dict(method="b", epochs=10, top1=70.0, agreement=75.0)]
    a, b = study.summarize(rows)
    assert (a["method"], a["epochs"], a["n"]) == ("a", 10, 2)
    assert a["top1_mean"] == 82.0 and a["top1_std"] == 2.0  # population std of 80, 84
    assert (a["top1_min"], a["top1_max"], a["agreement_mean"]) == (80.0, 84.0, 91.0)
    assert b["n"] == 1 and b["top1_std"] == 0.0


@pytest.mark.skipif(not os.path.exists(EVIDENCE), reason="the study's evidence is not committed")
def test_the_committed_evidence_is_consistent_and_says_whether_it_is_complete():
    with open(EVIDENCE, encoding="utf-8") as f:
        evidence = json.load(f)
    rows = evidence["rows"]
    for row in rows:
        assert {"method", "seed", "epochs", "train_images", "top1", "agreement"} <= set(row)
        assert 0 <= row["top1"] <= 100 and 0 <= row["agreement"] <= 100
    s = evidence["study"]
    assert evidence["finished_runs"] == len(rows) <= evidence["planned_runs"]
    assert evidence["complete"] == (len(rows) == evidence["planned_runs"])
    for method in s["methods"]:
        for epochs in s["budgets"]:
            seeds = {r["seed"] for r in rows if (r["method"], r["epochs"]) == (method, epochs)}
            # A finished study has every point over its (>= 3) seeds; one stopped early
            # says so (complete: false) and still has each method at the largest budget.
            if evidence["complete"]:
                assert len(seeds) >= 3 and seeds == set(s["seeds"]), (method, epochs)
            elif epochs == max(s["budgets"]):
                assert len(seeds) >= 2, (method, epochs)
    assert evidence["teacher"]["top1"] >= 92.5
    # The summary is the rows reduced: recompute one group by hand.
    g = evidence["summary"][0]
    values = [r["top1"] for r in rows if (r["method"], r["epochs"]) == (g["method"], g["epochs"])]
    assert abs(np.mean(values) - g["top1_mean"]) < 1e-9
