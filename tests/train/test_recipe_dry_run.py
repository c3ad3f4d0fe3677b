"""``--dry_run`` checks the model flags against the zoo and prints the hyper-parameters it
would train with (the ``--grid_index`` point's, not the preset's); ``--smoke`` says what it
trains instead of an explicit ``--student`` (issue 27)."""

import json
import os
import subprocess
import sys
import types

import pytest

from kdzoo.errors import RecipeError
from kdzoo.train.recipe import FunMatchRecipe, run_funmatch_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRESETS = {"fast": dict(epochs=10, lr=1e-2, weight_decay=1e-3, temperature=5)}
RECIPE = FunMatchRecipe("pets", "bit_r152x2.funmatch_teacher_pets_128", PRESETS)


def _options(tmp_path, **changes):
    values = dict(
        workdir=str(tmp_path / "w"), data_dir=str(tmp_path / "no-data"), strategy="default",
        epochs=None, batch_size=None, grid_index=None, grid=False, smoke=False, seed=0,
        mixed_precision="float32", deterministic=False, xla=False, dry_run=True,
        log_every_steps=None, checkpoint_every_steps=None, checkpoint_every_minutes=30.0,
        keep_checkpoints=3, overwrite=False, preset="fast", variant="funmatch", teacher=None,
        teacher_image_size=None, student="bit_r50x1", student_init=None,
        distill_dataset=None, grid_cache=True)
    values.update(changes)
    return types.SimpleNamespace(**values)


def _plan(capsys, tmp_path, **changes):
    run_funmatch_recipe(RECIPE, _options(tmp_path, **changes))
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_dry_run_prints_the_presets_hyper_parameters(capsys, tmp_path):
    plan = _plan(capsys, tmp_path)
    assert (plan["lr"], plan["weight_decay"], plan["temperature"]) == (1e-2, 1e-3, 5)
    assert (plan["batch_size"], plan["epochs"]) == (512, 10)
    assert "grid_index" not in plan


def test_dry_run_of_a_grid_point_prints_that_point(capsys, tmp_path):
    # The paper's grid, lr outermost, temperature innermost (4 lr x 5 wd x 4 T):
    # point 3 = (lr 3e-4, wd 1e-5, T 10); point 79 = (1e-2, 1e-3, 10).
    plan = _plan(capsys, tmp_path, grid_index=3)
    assert (plan["lr"], plan["weight_decay"], plan["temperature"]) == (3e-4, 1e-5, 10.0)
    assert plan["grid_index"] == 3
    plan = _plan(capsys, tmp_path, grid_index=79)
    assert (plan["lr"], plan["weight_decay"], plan["temperature"]) == (1e-2, 1e-3, 10.0)


def test_dry_run_of_the_whole_grid_says_so(capsys, tmp_path):
    plan = _plan(capsys, tmp_path, grid=True)
    assert plan["grid_points"] == 80 and len(plan["lr"]) == 4


@pytest.mark.parametrize("flag,value,expected", [
    ("student", "resnet50", r"--student=resnet50: not a zoo model name\. Did you mean "
                            r"'resnet50_funmatch_imagenet'"),
    ("teacher", "bit_r152x2.funmatch_teacher_pets_12", r"--teacher=bit_r152x2\.funmatch_"
                                                       r"teacher_pets_12: .*Did you mean"),
    ("teacher", "bit_r50x1", r"--teacher=bit_r50x1: this architecture has no published weights"),
])
def test_dry_run_refuses_a_model_flag_the_zoo_does_not_know(tmp_path, flag, value, expected):
    with pytest.raises(RecipeError, match=expected):
        run_funmatch_recipe(RECIPE, _options(tmp_path, **{flag: value}))


def test_smoke_says_what_it_trains_instead_of_an_explicit_student(capsys, tmp_path):
    run_funmatch_recipe(RECIPE, _options(tmp_path, smoke=True, student="mobilenet_v3_large"))
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["student"] == "tiny_bit"
    said = [line for line in captured.err.splitlines() if line.startswith("--smoke")]
    assert len(said) == 1 and "mobilenet_v3_large (from --student)" in said[0], said
    assert "tiny BiT" in said[0]


@pytest.mark.slow
def test_a_bad_student_flag_exits_2_with_one_line_naming_the_flag(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "recipes", "pets.py"), "--dry_run",
         "--student", "resnet50", "--workdir", str(tmp_path / "w")],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert "error: --student=resnet50" in proc.stderr
    assert "'resnet50_funmatch_imagenet'" in proc.stderr
