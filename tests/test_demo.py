"""The offline main job and our own pretrained Fashion-MNIST models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kdzoo
from kdzoo import registry
from kdzoo.data import fashion_mnist
from kdzoo.errors import CheckpointError

pytestmark = pytest.mark.slow  # end-to-end: `make test-fast` skips this file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
FMNIST_CARDS = sorted(n for n in registry.cards() if "fmnist" in n)


@pytest.fixture(scope="module")
def test_set():
    return fashion_mnist.load("test")


def test_three_fmnist_checkpoints_are_shipped():
    stages = {registry.cards()[n]["stage"] for n in FMNIST_CARDS}
    assert stages == {"teacher", "funmatch", "self_distillation"}
    for name in FMNIST_CARDS:
        card = registry.cards()[name]
        assert card["produced_by"].startswith("python recipes/fashion_mnist.py")
        assert card["sha256"] and card["format"] == "keras_weights"


@pytest.mark.parametrize("name", FMNIST_CARDS)
def test_pretrained_fmnist_model_reproduces_its_card_accuracy(name, test_set):
    images, labels = test_set
    model = kdzoo.load(name)
    pred = model.predict(images, batch_size=1000, verbose=0).argmax(-1)
    measured = 100.0 * float(np.mean(pred == labels))
    assert abs(measured - kdzoo.model_info(name)["top1"]) <= 0.1


def test_a_tampered_weight_file_is_refused(monkeypatch):
    name = FMNIST_CARDS[0]
    cards = dict(registry.cards())
    cards[name] = dict(cards[name], sha256="f" * 64)
    monkeypatch.setattr(registry, "cards", lambda: cards)
    with pytest.raises(CheckpointError, match="sha256"):
        kdzoo.load(name)


def test_demo_runs_end_to_end_and_resumes_by_skipping_finished_stages(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "recipes", "fashion_mnist.py"), "--workdir",
           str(tmp_path), "--train_examples", "512", "--teacher_epochs", "1", "--epochs", "1",
           "--batch_size", "64"]
    first = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.load(open(tmp_path / "metrics.json"))
    models = [r["model"] for r in summary["rows"]]
    assert models == ["teacher", "funmatch", "fix_rs", "labels", "self_distillation",
                      "deep_supervision"]
    for row in summary["rows"]:
        assert 0.0 <= row["top1"] <= 1.0 and row["flops"] > 0 and row["params"] > 0
    assert len(summary["exits"]["self_distillation"]["exit_accuracy"]) == 3
    assert (tmp_path / "accuracy_vs_flops.png").stat().st_size > 10_000
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000
    assert "| funmatch |" in first.stdout
    measured_at = os.path.getmtime(tmp_path / "metrics.json")
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0
    assert again.stdout.count("already done") == 6
    assert "| funmatch |" in again.stdout  # the table again, from the saved summary
    assert os.path.getmtime(tmp_path / "metrics.json") == measured_at
