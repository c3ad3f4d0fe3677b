"""The offline main job and our own pretrained Fashion-MNIST models."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kdzoo
from kdzoo.zoo import registry
from kdzoo.data import fashion_mnist
from kdzoo.errors import CheckpointError

pytestmark = pytest.mark.slow  # end-to-end: `make test-fast` skips this file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
FMNIST_CARDS = sorted(n for n in registry.cards() if "fmnist" in n)


@pytest.fixture(scope="module")
def test_set():
    return fashion_mnist.load("test")


def test_the_fmnist_teacher_and_one_student_per_method_are_shipped():
    cards = {n: registry.cards()[n] for n in FMNIST_CARDS}
    teacher = cards["fmnist_cnn_w32.kdzoo_teacher_full"]
    assert teacher["train_images"] == 60_000 and teacher["top1"] >= 92.5
    assert teacher["produced_by"].startswith("python recipes/fashion_mnist_teacher.py")
    students = {c["stage"]: c for n, c in cards.items() if n.startswith("fmnist_cnn_w16.")}
    assert set(students) == {"labels", "mixup", "fix/rs", "ind/ic", "same/ic", "funmatch",
                             "self_distillation"}
    for card in students.values():
        assert card["produced_by"].startswith("python recipes/fashion_mnist.py --long")
        assert card["train_images"] == 1000 and card["epochs"] == 300
    for card in cards.values():
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


def test_demo_runs_end_to_end_and_resumes_by_skipping_finished_runs(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "recipes", "fashion_mnist.py"), "--workdir",
           str(tmp_path), "--train_per_class", "4", "--budgets", "1",
           "--methods", "labels,fix/rs,funmatch", "--batch_size", "16"]
    first = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.load(open(tmp_path / "metrics.json"))
    assert [r["method"] for r in summary["rows"]] == ["labels", "fix/rs", "funmatch",
                                                      "self_distillation"]
    for row in summary["rows"]:
        assert row["train_images"] == 40 and row["epochs"] == 1 and row["seed"] == 0
        assert 0.0 <= row["top1"] <= 100.0 and 0.0 <= row["agreement"] <= 100.0
        # The runner's own test score agrees with the report's re-measurement.
        test = json.load(open(os.path.join(row["workdir"], "metrics.json")))["test"]
        own = test.get("accuracy", test.get("exit3_top1"))  # self distillation: deepest exit
        assert abs(100 * own - row["top1"]) < 0.02
    sd = summary["rows"][-1]
    assert len(sd["exit_top1"]) == 3 and sd["exit_mflops"] == sorted(sd["exit_mflops"])
    assert summary["teacher"]["top1"] >= 92.5
    for plot in ("accuracy_vs_epochs.png", "accuracy_vs_flops.png"):
        assert (tmp_path / plot).stat().st_size > 10_000
    assert "| funmatch | 1 | 1 |" in first.stdout
    assert first.stdout.count(" epochs seed 0: ") == 4  # one line per trained run
    again = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert " epochs seed 0: " not in again.stdout  # nothing retrained
    assert "| funmatch | 1 | 1 |" in again.stdout
