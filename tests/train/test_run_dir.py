"""A work directory is one run (issue 15, cases 1 and 2): settings recorded once and
compared on every rerun; a lock held for the run's life, naming its holder."""

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from kdzoo.train import run_dir
from kdzoo.errors import SettingsMismatchError, WorkdirInUseError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
BASE = {"dataset": "pets", "lr": 3e-3, "seed": 0, "batch_size": 4, "epochs": 1,
        "variant": "funmatch", "mixed_precision": None, "verbose": 2}


def _claim(workdir, **changes):
    return run_dir.claim(str(workdir), dict(BASE, **changes))


# ------------------------------------------------------------------ case 1 ---
def test_first_run_records_its_settings_and_an_identical_rerun_is_accepted(tmp_path):
    _claim(tmp_path).release()
    recorded = json.load(open(tmp_path / "config.json"))
    assert {k: recorded[k] for k in BASE} == BASE and recorded["reruns"] == []
    _claim(tmp_path).release()
    assert json.load(open(tmp_path / "config.json")) == recorded


@pytest.mark.parametrize("changes", [
    {"seed": 7}, {"lr": 1e-2, "batch_size": 8, "variant": "same/ic"},
    {"mixed_precision": "mixed_bfloat16"}, {"new_key": 1}])
def test_a_result_changing_difference_is_refused_naming_every_key(tmp_path, changes):
    _claim(tmp_path).release()
    before = open(tmp_path / "config.json").read()
    with pytest.raises(SettingsMismatchError) as info:
        _claim(tmp_path, **changes)
    message = str(info.value)
    for key in changes:
        assert f"{key}:" in message
    assert str(tmp_path) in message and "--workdir" in message and "--overwrite" in message
    assert open(tmp_path / "config.json").read() == before  # the first settings are kept
    _claim(tmp_path).release()  # the refused run released the lock


def test_extending_epochs_is_allowed_and_recorded_with_the_old_value(tmp_path):
    _claim(tmp_path).release()
    _claim(tmp_path, epochs=3, verbose=1).release()
    recorded = json.load(open(tmp_path / "config.json"))
    assert recorded["epochs"] == 3 and recorded["verbose"] == 1
    assert recorded["reruns"][0]["changed"] == {"epochs": [1, 3], "verbose": [2, 1]}
    with pytest.raises(SettingsMismatchError, match="seed"):
        _claim(tmp_path, epochs=3, seed=1)


def test_overwrite_deletes_the_old_run_and_records_the_new_settings(tmp_path):
    _claim(tmp_path).release()
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "state.json").write_text("{}")
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n")
    run_dir.claim(str(tmp_path), dict(BASE, seed=7), overwrite=True).release()
    assert sorted(os.listdir(tmp_path)) == ["config.json", "run.lock"]
    assert json.load(open(tmp_path / "config.json"))["seed"] == 7


def test_unreadable_record_is_refused_naming_the_file(tmp_path):
    (tmp_path / "config.json").write_text("")
    with pytest.raises(SettingsMismatchError, match=r"config\.json cannot be read.*--overwrite"):
        _claim(tmp_path)


def test_settings_are_described_the_same_in_every_process():
    import kdzoo
    a = run_dir.describe(functools.partial(kdzoo.load, "bit_r50x1", num_classes=3))
    assert a == {"callable": "kdzoo.zoo.loader.load", "args": ["bit_r50x1"],
                 "kwargs": {"num_classes": 3}}
    assert "0x" not in run_dir.describe(object())
    assert run_dir.describe((1, 2.5)) == [1, 2.5]


def test_grid_points_with_other_shared_settings_are_refused(tmp_path):
    points = [str(tmp_path / f"point-{i:03d}") for i in range(2)]
    run_dir.check_grid(str(tmp_path), {"seed": 0, "epochs": 1}, point_dirs=points)
    run_dir.check_grid(str(tmp_path), {"seed": 0, "epochs": 5}, point_dirs=points)
    with pytest.raises(SettingsMismatchError, match="seed: 0 there, 7 now"):
        run_dir.check_grid(str(tmp_path), {"seed": 7}, point_dirs=points)
    with pytest.raises(SettingsMismatchError):  # one point cannot replace the grid's record
        run_dir.check_grid(str(tmp_path), {"seed": 7}, overwrite=True, point_dirs=points)
    os.makedirs(points[0])
    open(os.path.join(points[0], "metrics.json"), "w").write("{}")
    run_dir.check_grid(str(tmp_path), {"seed": 7}, overwrite=True, whole_grid=True,
                       point_dirs=points)
    assert os.listdir(points[0]) == ["run.lock"]  # the old point's results are gone
    assert json.load(open(tmp_path / "grid.json")) == {"seed": 7}


# ------------------------------------------------------------------ case 2 ---
HOLDER = r"""
import sys, time
from kdzoo.train import run_dir
lock = run_dir.claim(sys.argv[1], {"seed": 0}, worker=sys.argv[2] or None)
print("held", flush=True)
time.sleep(600)
"""


def _hold(workdir, worker=""):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir), worker], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
def test_a_live_holder_refuses_a_second_run_and_a_dead_one_is_taken_over(tmp_path):
    proc = _hold(tmp_path)
    try:
        with pytest.raises(WorkdirInUseError) as info:
            run_dir.claim(str(tmp_path), {"seed": 0})
        message = str(info.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message
        assert str(tmp_path) in message
        # another worker of a multi-worker run locks its own directory
        run_dir.claim(str(tmp_path), {"seed": 0}, worker="worker-1").release()
    finally:
        proc.send_signal(signal.SIGKILL)  # dies without releasing anything
        proc.wait()
    lock = run_dir.claim(str(tmp_path), {"seed": 0})
    assert lock.previous_holder and f"pid {proc.pid}" in lock.previous_holder
    lock.release()


@pytest.mark.slow
def test_each_worker_directory_is_locked_on_its_own(tmp_path):
    proc = _hold(tmp_path, "worker-1")
    try:
        with pytest.raises(WorkdirInUseError, match="worker-1"):
            run_dir.claim(str(tmp_path), {"seed": 0}, worker="worker-1")
        run_dir.claim(str(tmp_path), {"seed": 0}).release()  # the chief's own dir is free
    finally:
        proc.kill()
        proc.wait()


def test_two_claims_in_one_process_also_exclude_each_other(tmp_path):
    first = _claim(tmp_path)
    with pytest.raises(WorkdirInUseError, match=f"pid {os.getpid()}"):
        _claim(tmp_path)
    first.release()
    _claim(tmp_path).release()


# ------------------------------------------------------- end to end (recipe) ---
def _pets(workdir, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "recipes", "pets.py"), "--smoke",
                           "--workdir", str(workdir), *args], env=ENV, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_recipe_rerun_with_other_settings_is_refused_and_epochs_may_grow(tmp_path):
    first = _pets(tmp_path, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    history = open(tmp_path / "history.csv").read()
    other = _pets(tmp_path, "--epochs", "3", "--seed", "7", "--batch_size", "8",
                  "--variant", "same/ic")
    assert other.returncode != 0
    for key in ("seed", "batch_size", "variant"):
        assert f"{key}:" in other.stderr
    # One clear message (what differs, what to do), no traceback, nothing trained.
    assert "already holds a run with other settings" in other.stderr
    assert "Traceback" not in other.stderr and "Epoch 2/3" not in other.stdout
    assert open(tmp_path / "history.csv").read() == history  # nothing of it was trained
    longer = _pets(tmp_path, "--epochs", "2")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert json.load(open(tmp_path / "config.json"))["reruns"][0]["changed"] == {
        "epochs": [1, 2]}
    # --overwrite is test_overwrite_deletes_the_old_run_and_records_the_new_settings (the
    # same kdzoo.train.run_dir call the recipe makes), without a fourth recipe process here.
