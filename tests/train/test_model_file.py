"""One output name (issue 26): every run writes ``model.keras`` (FunMatch: the student, a
plain keras.Model); a directory a FunMatch run of an older kdzoo wrote (``student.keras``
only, e.g. a long run still training at an older commit) stays readable by the reports."""

import json
import os
import sys

import numpy as np
import pytest

from helpers import tiny_convnet
from kdzoo.train import run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "recipes"))


def _touch(path, text="x"):
    with open(path, "w") as f:
        f.write(text)


def test_model_file_is_the_model_keras_every_run_writes(tmp_path):
    _touch(tmp_path / "model.keras")
    assert run_dir.model_file(str(tmp_path)) == os.path.join(str(tmp_path), "model.keras")


def test_an_older_funmatch_runs_student_keras_is_read_when_it_is_the_only_one(tmp_path):
    _touch(tmp_path / "student.keras")
    assert run_dir.model_file(str(tmp_path)) == os.path.join(str(tmp_path), "student.keras")


def test_model_keras_wins_over_a_legacy_student_keras_beside_it(tmp_path):
    # An older run's directory, resumed (epochs extended) and exported by this kdzoo.
    _touch(tmp_path / "student.keras", "old")
    _touch(tmp_path / "model.keras", "new")
    assert open(run_dir.model_file(str(tmp_path))).read() == "new"


@pytest.mark.parametrize("entries", [[], ["metrics.json", "config.json"], ["model.keras/"]])
def test_no_model_is_a_clear_error_naming_the_workdir_and_both_names(tmp_path, entries):
    for name in entries:  # "model.keras/": a directory of that name is no model
        if name.endswith("/"):
            os.mkdir(tmp_path / name[:-1])
        else:
            _touch(tmp_path / name)
    with pytest.raises(FileNotFoundError) as info:
        run_dir.model_file(str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and "model.keras" in message and "student.keras" in message


def test_a_missing_workdir_is_the_same_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="student.keras"):
        run_dir.model_file(str(tmp_path / "never_ran"))


def test_the_legacy_name_is_still_a_runs_own_file_and_its_stale_temp_is_removed(tmp_path):
    import types

    from kdzoo.train.run_body import remove_stale_exports
    assert run_dir.written_by_kdzoo("student.keras") and run_dir.written_by_kdzoo("model.keras")
    names = [".tmp-model.keras-1", ".tmp-student.keras-2", ".tmp-metrics.json-3",
             ".tmp-mine.keras-4", "notes.txt"]
    for name in names:
        _touch(tmp_path / name)
    remove_stale_exports(types.SimpleNamespace(workdir=str(tmp_path)))
    assert sorted(os.listdir(tmp_path)) == [".tmp-mine.keras-4", "notes.txt"]


def _pred(model, images):
    return np.argmax(model.predict(images, batch_size=100, verbose=0), -1)


def test_the_study_report_measures_a_directory_holding_only_student_keras(tmp_path):
    import keras

    import fashion_mnist_report as report
    from kdzoo.train import FunMatchRun
    model = tiny_convnet(28, 10, 1, seed=3)
    model.save(str(tmp_path / "student.keras"))  # what an older kdzoo's FunMatch run wrote
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 28, 28, 1)).astype("float32")
    pred = _pred(keras.saving.load_model(str(tmp_path / "student.keras")), images)
    labels = np.where(np.arange(300) < 200, pred, (pred + 1) % 10)  # 2/3 right
    teacher_pred = np.where(np.arange(300) < 100, pred, (pred + 3) % 10)  # 1/3 agree
    run = FunMatchRun(dataset="fashion_mnist", teacher=None, student=None,
                      workdir=str(tmp_path), image_size=28)
    result = report._measure(run, images, labels, teacher_pred)
    assert result["top1"] == pytest.approx(100 * 200 / 300, abs=1e-6)
    assert result["agreement"] == pytest.approx(100 * 100 / 300, abs=1e-6)
    assert json.load(open(tmp_path / "measured.json")) == result


def _funmatch(workdir, epochs=1):
    from kdzoo.train import FunMatchRun
    return FunMatchRun(
        dataset="fashion_mnist", workdir=str(workdir), epochs=epochs,
        teacher=lambda: tiny_convnet(28, 10, 1, name="teacher", width=8, seed=1),
        student=lambda: tiny_convnet(28, 10, 1, name="student", width=4, seed=2),
        batch_size=10, train_per_class=2, warmup_steps=1, image_size=28, verbose=0,
        log_every_steps=2, checkpoint_every_minutes=None, eval_batch_size=1000,
        eval_roles=("test",))


@pytest.mark.slow
def test_a_funmatch_run_writes_model_keras_and_resumes_an_older_runs_directory(tmp_path):
    import keras

    import kdzoo  # noqa: F401  (registers kdzoo's layers for loading)
    from kdzoo.data import fashion_mnist
    from kdzoo.distill import FunMatchDistiller
    from kdzoo.train import run_funmatch
    metrics = run_funmatch(_funmatch(tmp_path))
    assert "model.keras" in os.listdir(tmp_path) and "student.keras" not in os.listdir(tmp_path)
    student = keras.saving.load_model(str(tmp_path / "model.keras"))
    assert isinstance(student, keras.Model) and not isinstance(student, FunMatchDistiller)
    assert student.name == "student"
    assert student.count_params() == tiny_convnet(28, 10, 1, width=4).count_params()
    x, y = fashion_mnist.load("test")
    top1 = np.mean(_pred(student, x.astype("float32")) == y)
    assert top1 == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    # As an older kdzoo left it: student.keras. Extending it (epochs 1 -> 2) is the same run
    # (not refused); this kdzoo writes model.keras beside it, which the readers then pick.
    os.rename(tmp_path / "model.keras", tmp_path / "student.keras")
    run_funmatch(_funmatch(tmp_path, epochs=2))
    assert run_dir.model_file(str(tmp_path)) == os.path.join(str(tmp_path), "model.keras")
    longer = keras.saving.load_model(run_dir.model_file(str(tmp_path)))
    assert not all(np.array_equal(a, b) for a, b in
                   zip(student.get_weights(), longer.get_weights()))
    assert json.load(open(tmp_path / "config.json"))["reruns"][-1]["changed"] == {
        "epochs": [1, 2]}
