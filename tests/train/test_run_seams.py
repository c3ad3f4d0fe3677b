"""Issue 26, one seam per method: a study asks the run to train itself (``run.train()``),
so subclasses of the run options train by their base's runner and a new kind of run
brings its own trainer; the sections' time estimate follows the class, not its name."""

import dataclasses
import json
import os
import sys

import pytest

from kdzoo.train import FunMatchRun, RunOptions, SupervisedRun, study

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "recipes"))


@dataclasses.dataclass
class MySupervised(SupervisedRun):
    note: str = "a field the base does not have"


@dataclasses.dataclass
class MyFunMatch(FunMatchRun):
    pass


@dataclasses.dataclass(kw_only=True)
class OwnRun(RunOptions):
    """A new kind of run: its trainer lives with it, the study needs no change."""

    workdir: str
    epochs: int = 1
    calls: list = dataclasses.field(default_factory=list)

    def train(self):
        self.calls.append(self.workdir)
        return {}


def _supervised(cls, workdir, **kw):
    return cls(dataset="fashion_mnist", model=None, optimizer=None, workdir=str(workdir), **kw)


def _funmatch(cls, workdir):
    return cls(dataset="fashion_mnist", teacher=None, student=None, workdir=str(workdir))


@pytest.fixture
def runners(monkeypatch):
    """The two runners replaced where ``train()`` finds them: which one each run reached."""
    from kdzoo.train import runner
    calls = []
    monkeypatch.setattr(runner, "run_funmatch", lambda run: calls.append(("funmatch", run)))
    monkeypatch.setattr(runner, "run_supervised", lambda run: calls.append(("supervised", run)))
    return calls


@pytest.mark.parametrize("make, cls, expected", [
    (_supervised, SupervisedRun, "supervised"), (_supervised, MySupervised, "supervised"),
    (_funmatch, FunMatchRun, "funmatch"), (_funmatch, MyFunMatch, "funmatch")])
def test_run_one_reaches_the_runner_of_the_runs_kind_subclasses_too(tmp_path, runners, make,
                                                                     cls, expected):
    run = make(cls, tmp_path)
    assert study.run_one(run) is True
    assert runners == [(expected, run)]


def test_a_new_kind_of_run_trains_by_its_own_train_method(tmp_path, runners):
    run = OwnRun(workdir=str(tmp_path))
    assert study.run_one(run) is True and run.calls == [str(tmp_path)]
    assert runners == []  # neither built-in runner was asked


def test_run_options_without_a_trainer_say_so(tmp_path):
    @dataclasses.dataclass(kw_only=True)
    class NoTrainer(RunOptions):
        workdir: str
        epochs: int = 1

    with pytest.raises(NotImplementedError, match="NoTrainer does not say how it trains"):
        study.run_one(NoTrainer(workdir=str(tmp_path)))


@pytest.mark.slow
def test_a_subclass_of_supervised_run_really_trains_through_run_one(tmp_path):
    import functools

    import keras
    from helpers import tiny_cifar_resnet
    run = MySupervised(dataset="fashion_mnist", workdir=str(tmp_path),
                       model=functools.partial(tiny_cifar_resnet, 2),
                       optimizer=lambda steps: keras.optimizers.SGD(0.05), epochs=1,
                       batch_size=10, train_per_class=2, log_every_steps=2, verbose=0,
                       checkpoint_every_minutes=None, eval_batch_size=1000,
                       eval_roles=("test",))
    assert study.run_one(run) is True
    metrics = json.load(open(tmp_path / "metrics.json"))
    assert metrics["epochs"] == 1 and metrics["total_steps"] == 2  # round(20 / 10)
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert json.load(open(tmp_path / "config.json"))["note"] == "a field the base does not have"
    assert keras.saving.load_model(tmp_path / "model.keras").input_shape == (None, 28, 28, 1)
    assert study.is_finished(run) and study.run_one(run) is False  # finished: not retrained


def test_the_sections_estimate_of_a_subclass_is_its_bases(tmp_path):
    import fashion_mnist_sections_report as rep
    from kdzoo.train import plan
    # By hand: 2 per class x 10 classes = 20 images, batch 10, 3 epochs: 6 steps.
    sup = dict(train_per_class=2, batch_size=10, epochs=3)
    base, sub = (_supervised(c, tmp_path, **sup) for c in (SupervisedRun, MySupervised))
    assert plan(sub)[0].total_steps == 6
    assert rep.estimate_s(sub) == pytest.approx(30 + 0.04 * 6) == rep.estimate_s(base)
    fm = dict(train_per_class=2, batch_size=10, epochs=3, warmup_steps=0)
    fun = FunMatchRun(dataset="fashion_mnist", teacher=None, student=None,
                      workdir=str(tmp_path), **fm)
    fun_sub = MyFunMatch(dataset="fashion_mnist", teacher=None, student=None,
                         workdir=str(tmp_path), **fm)
    assert rep.estimate_s(fun_sub) == pytest.approx(30 + 0.07 * 6) == rep.estimate_s(fun)
    with pytest.raises(KeyError, match="OwnRun"):
        rep.estimate_s(OwnRun(workdir=str(tmp_path)))
