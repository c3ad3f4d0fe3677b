"""--overwrite deletes only a kdzoo run's own files; a study reuses a finished run only
under the same settings; bad flags are refused before the workdir is claimed; a grid's
teacher cache follows a longer schedule (docs/reliability.md, the sections after 15)."""

import json
import os
import types

import pytest

from kdzoo.train import run_dir, study
from kdzoo.errors import RecipeError, SettingsMismatchError

BASE = {"dataset": "pets", "lr": 3e-3, "seed": 0, "batch_size": 4, "epochs": 1}


def _claim(workdir, overwrite=False, **changes):
    run_dir.claim(str(workdir), dict(BASE, **changes), overwrite=overwrite).release()


# ------------------------------------------------- 1: --overwrite empties any folder ---
def test_overwrite_refuses_a_folder_that_holds_no_kdzoo_run_and_deletes_nothing(tmp_path):
    (tmp_path / "thesis.tex").write_text("x")
    (tmp_path / "figures").mkdir()
    with pytest.raises(SettingsMismatchError) as info:
        _claim(tmp_path, overwrite=True)
    message = str(info.value)
    assert "thesis.tex" in message and "figures" in message and str(tmp_path) in message
    assert (tmp_path / "thesis.tex").read_text() == "x" and (tmp_path / "figures").is_dir()
    assert not (tmp_path / "config.json").exists()


def test_overwrite_deletes_what_a_run_wrote_and_leaves_other_files_named(tmp_path, capsys):
    _claim(tmp_path)
    written = ["checkpoints/state.json", "logs/events.out", "history.csv", "metrics.json",
               "student.keras", "model.keras", "teacher.tcache", ".tmp-metrics.json-abc"]
    for name in written:
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    _claim(tmp_path, overwrite=True, seed=7)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "notes.txt", "run.lock"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert json.load(open(tmp_path / "config.json"))["seed"] == 7
    assert "notes.txt" in capsys.readouterr().out


@pytest.mark.parametrize("entries", [[], ["run.lock"]])
def test_an_empty_folder_or_one_with_only_the_lock_can_be_overwritten(tmp_path, entries):
    for name in entries:
        (tmp_path / name).write_text("")
    _claim(tmp_path, overwrite=True)
    assert json.load(open(tmp_path / "config.json"))["batch_size"] == 4


def test_the_record_is_marked_and_an_old_unmarked_record_is_still_ours(tmp_path):
    _claim(tmp_path / "new")
    assert run_dir.MARKER in json.load(open(tmp_path / "new" / "config.json"))
    old = tmp_path / "old"  # what kdzoo wrote before the marker: the settings + "reruns"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.json").write_text(json.dumps(dict(BASE, reruns=[])))
    _claim(old, overwrite=True, seed=3)
    assert sorted(os.listdir(old)) == ["config.json", "run.lock"]
    # a config.json of someone else's is not a kdzoo record
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"theme": "dark"}))
    with pytest.raises(SettingsMismatchError, match="config.json"):
        _claim(other, overwrite=True)
    assert json.load(open(other / "config.json")) == {"theme": "dark"}


def test_a_worker_directory_without_a_record_of_its_own_is_still_overwritten(tmp_path):
    _claim(tmp_path)
    run_dir.claim(str(tmp_path), BASE, worker="worker-1").release()
    (tmp_path / "worker-1" / "history.csv").write_text("old")
    run_dir.claim(str(tmp_path), BASE, worker="worker-1", overwrite=True).release()
    assert os.listdir(tmp_path / "worker-1") == ["run.lock"]


def test_a_whole_grid_overwrite_leaves_unknown_files_of_a_point(tmp_path):
    point = tmp_path / "point-000"
    run_dir.check_grid(str(tmp_path), {"seed": 0}, point_dirs=[str(point)])
    point.mkdir()
    (point / "metrics.json").write_text("{}")
    (point / "plot.png").write_text("mine")
    run_dir.check_grid(str(tmp_path), {"seed": 7}, overwrite=True, whole_grid=True,
                       point_dirs=[str(point)])
    assert sorted(os.listdir(point)) == ["plot.png", "run.lock"]


# ------------------------------------------ 3: the study reports old runs as new ---
def _supervised(workdir, **changes):
    from kdzoo.train import SupervisedRun
    fields = dict(dataset="fashion_mnist", model=None, optimizer=None, workdir=str(workdir),
                  epochs=10, batch_size=128, train_per_class=2)
    return SupervisedRun(**dict(fields, **changes))


def _finish(run):
    """A finished run as run_supervised leaves it: its record (with the runner's derived
    keys, e.g. the resolved precision), then its metrics."""
    from kdzoo.train.run_body import settings_for
    settings, defaults = settings_for(run, "float32")
    assert "precision" in settings
    run_dir.claim(run.workdir, settings, defaults=defaults).release()
    with open(os.path.join(run.workdir, "metrics.json"), "w") as f:
        json.dump({"epochs": run.epochs, "test": {"accuracy": 0.5}}, f)


@pytest.fixture
def trained(monkeypatch):
    """Replace the trainer: record which runs would train now (run_one calls run.train())."""
    from kdzoo.train import SupervisedRun
    calls = []
    monkeypatch.setattr(SupervisedRun, "train", lambda run: calls.append(run))
    return calls


def test_a_finished_run_with_the_same_settings_is_reused(tmp_path, trained):
    _finish(_supervised(tmp_path))
    assert study.run_one(_supervised(tmp_path, verbose=0)) is False  # verbose: neutral
    assert trained == []


def test_a_finished_run_with_other_settings_is_refused_naming_the_keys(tmp_path, trained):
    _finish(_supervised(tmp_path))
    changed = _supervised(tmp_path, train_per_class=3, batch_size=8)
    with pytest.raises(SettingsMismatchError) as info:
        study.run_one(changed)
    assert "train_per_class: 2 there, 3 now" in str(info.value)
    assert "batch_size: 128 there, 8 now" in str(info.value)
    with pytest.raises(SettingsMismatchError):  # the report's check too: no stale rows
        study.is_finished(changed)
    assert trained == []
    assert study.run_one(_supervised(tmp_path, train_per_class=3, overwrite=True)) is True
    assert len(trained) == 1


def test_a_finished_run_of_fewer_epochs_is_trained_on(tmp_path, trained):
    _finish(_supervised(tmp_path))
    assert study.is_finished(_supervised(tmp_path, epochs=20)) is False
    assert study.run_one(_supervised(tmp_path, epochs=20)) is True and len(trained) == 1


# --------------------------------- 7: flags checked before the workdir is claimed ---
def _options(workdir, **changes):
    """The recipe options of ``python recipes/pets.py --smoke`` (common.py's defaults)."""
    return types.SimpleNamespace(**dict(dict(
        workdir=str(workdir), data_dir=None, strategy="default", epochs=None,
        batch_size=None, grid_index=None, grid=False, smoke=True, seed=0,
        mixed_precision="float32", deterministic=False, xla=False, dry_run=False,
        log_every_steps=None, checkpoint_every_steps=None, checkpoint_every_minutes=30.0,
        keep_checkpoints=3, overwrite=False, preset="fast", variant="funmatch",
        teacher=None, student="bit_r50x1", student_init=None, teacher_image_size=None,
        distill_dataset=None, grid_cache=True), **changes))


def _pets():
    from kdzoo.train.recipe import FunMatchRecipe
    return FunMatchRecipe("pets", "unused", {"fast": dict(epochs=1, lr=1e-2,
                                                           weight_decay=1e-3, temperature=5)})


@pytest.mark.parametrize("grid_index", [None, 0])
def test_a_batch_larger_than_the_data_is_refused_before_the_workdir_is_claimed(
        tmp_path, grid_index):
    from kdzoo.train.recipe import run_funmatch_recipe
    workdir = tmp_path / "run"
    with pytest.raises(RecipeError) as info:
        run_funmatch_recipe(_pets(), _options(workdir, batch_size=16, grid_index=grid_index))
    assert "--batch_size 16" in str(info.value) and "8 training images" in str(info.value)
    assert not workdir.exists() or os.listdir(workdir) == []  # nothing recorded, no lock


@pytest.mark.slow
def test_the_smoke_recipe_with_overwrite_keeps_a_foreign_folder(tmp_path):
    """The issue's command, in process: pets --smoke --overwrite --workdir D."""
    from kdzoo.train.recipe import run_funmatch_recipe
    (tmp_path / "thesis.tex").write_text("x")
    with pytest.raises(SettingsMismatchError, match="thesis.tex"):
        run_funmatch_recipe(_pets(), _options(tmp_path, overwrite=True))
    assert sorted(os.listdir(tmp_path)) == ["run.lock", "thesis.tex"]


# ------------------------------------- 8: a grid cache for a longer schedule ---
@pytest.mark.slow
def test_a_grid_teacher_cache_is_rebuilt_for_a_longer_schedule_and_on_overwrite(
        tmp_path, capsys):
    from kdzoo.distill.funmatch.teacher_cache import open_teacher_cache
    from kdzoo.train.recipe import GRID_CACHE, run_funmatch_recipe
    cache = tmp_path / GRID_CACHE
    run_funmatch_recipe(_pets(), _options(tmp_path, grid_index=0, epochs=2))
    assert open_teacher_cache(str(cache)).epochs == (0, 2)  # 8 images, batch 4: 2 steps each
    capsys.readouterr()
    run_funmatch_recipe(_pets(), _options(tmp_path, grid_index=0, epochs=4))
    assert open_teacher_cache(str(cache)).epochs == (0, 4)
    assert "Rebuilding the grid's teacher cache" in capsys.readouterr().out
    before = os.stat(cache).st_mtime_ns
    from kdzoo.train import recipe
    options = _options(tmp_path, epochs=4, overwrite=True)
    base = recipe.funmatch_base(_pets(), options)
    with recipe.maybe_mock_data(True):
        recipe._grid_teacher_cache(options, base, 8, rebuild=True)
    assert os.stat(cache).st_mtime_ns != before
    assert "--overwrite" in capsys.readouterr().out
