"""The runner's best / last epoch report: selected on minival, written into metrics.json."""

import json
import os

import pytest

from kdzoo.distill.self_distill.exit_reporting import ExitAccuracyReport, metrics_entries
from helpers import tiny_cifar_resnet


class _Fed:
    """Stands in for a model: evaluate returns the accuracies fed for each split."""

    def __init__(self, fed, key="ensemble_top1"):
        self.fed, self.key = fed, key
        self.optimizer = type("Opt", (), {"iterations": 0})()

    def evaluate(self, data, return_dict=True, verbose=0):
        return {"loss": 1.0, self.key: self.fed[data].pop(0)}


def _run_epochs(cb, model, epochs):
    cb.set_model(model)
    cb.on_train_begin()
    for epoch in range(epochs):
        model.optimizer.iterations = 5 * (epoch + 1)
        cb.on_epoch_end(epoch)


@pytest.mark.parametrize("key", ["ensemble_top1", "accuracy"])
def test_metrics_entries_pick_best_on_minival_and_label_the_test_best(tmp_path, key):
    # epoch:          1     2     3     4
    fed = {"val": [0.50, 0.80, 0.60, 0.70], "test": [0.90, 0.60, 0.95, 0.65]}
    cb = ExitAccuracyReport("val", "test", str(tmp_path / "r.json"))
    _run_epochs(cb, _Fed(fed, key), 4)
    m = metrics_entries([object(), cb])
    assert m["top1_last_epoch"]["epoch"] == 4
    assert m["top1_best_epoch"]["epoch"] == 2                  # best on minival, not test
    assert m["top1_best_epoch"]["minival"]["ensemble"] == 0.80
    assert m["top1_best_epoch"]["test"]["ensemble"] == 0.60    # test at that epoch
    assert m["top1_best_epoch"]["minival"]["ensemble"] >= m["top1_last_epoch"]["minival"]["ensemble"]
    assert m["top1_test_selected_best"]["epoch"] == 3
    assert m["top1_test_selected_best"]["test"]["ensemble"] == 0.95
    assert "TEST set" in m["top1_test_selected_best"]["note"]
    # A rerun that trains nothing (a fresh callback, no history) reads the file.
    again = metrics_entries([ExitAccuracyReport("val", "test", str(tmp_path / "r.json"))])
    assert again == json.loads(json.dumps(m))
    assert metrics_entries([]) == {}


def test_a_model_without_accuracy_metrics_is_a_clear_error(tmp_path):
    cb = ExitAccuracyReport("val", None, str(tmp_path / "r.json"))
    with pytest.raises(ValueError, match="ensemble_top1.*accuracy"):
        _run_epochs(cb, _Fed({"val": [0.5]}, key="top5"), 1)


def test_the_report_is_on_for_self_distillation_and_opt_in_for_other_models():
    import keras
    from kdzoo.distill.self_distill.exit_reporting import callbacks_for
    plain = keras.Sequential([keras.layers.Dense(2)])
    assert callbacks_for(plain, type("Run", (), {"best_epoch_report": None})()) == []
    assert callbacks_for(plain, type("Run", (), {"best_epoch_report": False})()) == []


@pytest.mark.slow
@pytest.mark.parametrize("method", ["self_distillation", "labels"])
def test_a_runner_run_writes_best_and_last_epoch_into_metrics(tmp_path, method):
    import keras
    from kdzoo.train import SupervisedRun, run_supervised
    run = SupervisedRun(dataset="fashion_mnist", model=tiny_cifar_resnet,
                        optimizer=lambda steps: keras.optimizers.SGD(0.05),
                        workdir=str(tmp_path), method=method, epochs=3, batch_size=10,
                        train_per_class=2, log_every_steps=1, crop="pad", verbose=0,
                        checkpoint_every_minutes=None, eval_batch_size=1000,
                        best_epoch_report=True if method == "labels" else None)
    metrics = run_supervised(run)
    on_disk = json.load(open(os.path.join(tmp_path, "metrics.json")))
    assert on_disk["top1_best_epoch"] == json.loads(json.dumps(metrics["top1_best_epoch"]))
    report = json.load(open(os.path.join(tmp_path, "exit_accuracy.json")))
    per_epoch = report["per_epoch"]
    assert [h["epoch"] for h in per_epoch] == [1, 2, 3, 4, 5, 6]   # 20 images / 10 x 3
    best_val = max(h["minival"]["ensemble"] for h in per_epoch)
    best = on_disk["top1_best_epoch"]
    assert best["minival"]["ensemble"] == best_val
    assert best["minival"]["ensemble"] >= on_disk["top1_last_epoch"]["minival"]["ensemble"]
    assert best["epoch"] == next(h["epoch"] for h in per_epoch
                                 if h["minival"]["ensemble"] == best_val)
    assert on_disk["top1_last_epoch"]["test"]["ensemble"] == pytest.approx(
        on_disk["test"]["ensemble_top1" if method != "labels" else "accuracy"], abs=1e-6)
    exits = {"exit1", "exit2", "exit3", "exit4", "ensemble"} if method != "labels" \
        else {"ensemble"}
    assert set(best["test"]) == exits
