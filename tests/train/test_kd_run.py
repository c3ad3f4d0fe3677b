"""A tiny end-to-end classical-KD run through the runner: the same output files as a
baseline run, the student exported, the teacher's weights pinned in the run's record."""

import json
import os

import numpy as np
import pytest

from helpers import tiny_cifar_resnet


def _run(workdir, method, **kw):
    import functools

    import keras
    from kdzoo.train import SupervisedRun
    return SupervisedRun(dataset="fashion_mnist", workdir=str(workdir), method=method,
                         model=functools.partial(tiny_cifar_resnet, kw.pop("width", 2)),
                         optimizer=lambda steps: keras.optimizers.SGD(0.05), epochs=2,
                         batch_size=10, train_per_class=2, log_every_steps=2, crop="pad",
                         verbose=0, checkpoint_every_minutes=None, eval_batch_size=1000,
                         best_epoch_report=True, eval_roles=("test",), **kw)


def _files(workdir):
    return sorted(f for f in os.listdir(workdir) if f != "run.lock")


@pytest.mark.slow
def test_a_kd_run_writes_what_a_baseline_run_writes_and_exports_the_student(tmp_path):
    import keras

    import kdzoo  # noqa: F401  (registers the zoo's layers for loading)
    from kdzoo.data import fashion_mnist
    from kdzoo.distill.funmatch.fingerprint import weights_fingerprint
    from kdzoo.train import run_supervised
    teacher_run = _run(tmp_path / "teacher", "labels", width=4)
    run_supervised(teacher_run)
    teacher_file = str(tmp_path / "teacher" / "model.keras")
    teacher = keras.saving.load_model(teacher_file)
    before = [np.array(w) for w in teacher.weights]
    base = _run(tmp_path / "base", "labels")
    kd = _run(tmp_path / "kd", "knowledge_distillation", teacher=teacher_file, alpha=0.5,
              temperature=2.0)
    run_supervised(base)
    metrics = run_supervised(kd)
    assert _files(tmp_path / "kd") == _files(tmp_path / "base")
    assert {"model.keras", "metrics.json", "exit_accuracy.json", "config.json",
            "best_exit.weights.h5", "checkpoints"} <= set(_files(tmp_path / "kd"))
    on_disk = {d: json.load(open(tmp_path / d / "metrics.json")) for d in ("base", "kd")}
    assert set(on_disk["kd"]) == set(on_disk["base"])
    assert set(on_disk["kd"]["test"]) == set(on_disk["base"]["test"]) == {"loss", "accuracy"}
    assert on_disk["kd"]["method"] == "knowledge_distillation"
    # model.keras is the student alone (the tiny net's weights), scoring what metrics say.
    student = keras.saving.load_model(str(tmp_path / "kd" / "model.keras"))
    assert student.count_params() == tiny_cifar_resnet(2).count_params()
    x, y = fashion_mnist.load("test")
    top1 = float(np.mean(np.argmax(student.predict(x, batch_size=1000, verbose=0), -1) == y))
    assert top1 == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    student.load_weights(str(tmp_path / "kd" / "best_exit.weights.h5"))  # the student's file
    # The teacher file is untouched and its weights are pinned in the kd run's record.
    again = keras.saving.load_model(teacher_file)
    for b, w in zip(before, again.weights):
        np.testing.assert_array_equal(b, np.array(w))
    record = json.load(open(tmp_path / "kd" / "config.json"))
    assert record["teacher_weights_sha256"] == [weights_fingerprint(teacher)]
    assert record["teacher"] == teacher_file
    assert "teacher_weights_sha256" not in json.load(open(tmp_path / "base" / "config.json"))
