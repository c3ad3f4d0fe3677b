"""The runner: grids, resumable checkpoints, recipes end to end (--smoke), strategies."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from kdzoo.train import checkpointing, grid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def test_paper_grid_expands_to_80_points_in_a_stable_order():
    points = grid.expand_grid(grid.FUNMATCH_GRID)
    assert len(points) == 4 * 5 * 4
    assert points[0] == {"lr": 3e-4, "weight_decay": 1e-5, "temperature": 1.0}
    assert points[1]["temperature"] == 2.0 and points[4]["weight_decay"] == 3e-5
    assert len({tuple(p.values()) for p in points}) == 80
    assert grid.grid_point(grid.FUNMATCH_GRID, 79) == {"lr": 1e-2, "weight_decay": 1e-3,
                                                       "temperature": 10.0}
    with pytest.raises(IndexError, match=r"\[0, 79\]"):
        grid.grid_point(grid.FUNMATCH_GRID, 80)
    with pytest.raises(ValueError, match="non-empty"):
        grid.expand_grid({"lr": []})


def test_best_point_is_chosen_on_minival_not_test(tmp_path):
    for index, (minival, test) in enumerate([(0.5, 0.9), (0.7, 0.6), (0.6, 0.8)]):
        os.makedirs(grid.point_dir(tmp_path, index))
        checkpointing.write_json(os.path.join(grid.point_dir(tmp_path, index), "metrics.json"), {
            "params": grid.grid_point(grid.FUNMATCH_GRID, index),
            "minival": {"accuracy": minival}, "test": {"accuracy": test}})
    os.makedirs(grid.point_dir(tmp_path, 3))  # unfinished: no metrics.json
    rows = grid.finished_points(str(tmp_path))
    assert [i for i, _ in rows] == [0, 1, 2]
    assert grid.best_point(rows)[0] == 1
    table = grid.summary_table(rows)
    assert table.splitlines()[2].startswith("| 1* |") and "70.00" in table
    with pytest.raises(ValueError, match="No grid point"):
        grid.best_point([])


def _recipe(name, *args):
    return [sys.executable, os.path.join(ROOT, "recipes", f"{name}.py"), *args]


def _student_weights(workdir):
    import keras

    import kdzoo  # noqa: F401  (registers kdzoo's layers for loading)
    model = keras.saving.load_model(os.path.join(workdir, "model.keras"))
    return [np.asarray(w) for w in model.get_weights()]


MIRRORED = r"""
import sys, numpy as np
from kdzoo.train.distribute import configure_logical_cpus
configure_logical_cpus(2)
import tensorflow_datasets as tfds
from kdzoo.train import FunMatchRun, run_funmatch
from kdzoo.models.bit import tiny_bit
out = {}
for strategy in ("default", "mirrored"):
    with tfds.testing.mock_data(num_examples=16):
        run = FunMatchRun(dataset="pets", teacher=lambda: tiny_bit(37, (32, 32, 3)),
                          student=lambda: tiny_bit(37, (32, 32, 3)), workdir=sys.argv[1] + strategy,
                          epochs=1, batch_size=8, warmup_steps=1, image_size=32, strategy=strategy,
                          num_train_examples=16, eval_batch_size=8, verbose=0, seed=3)
        out[strategy] = run_funmatch(run)
import keras
w = [keras.saving.load_model(sys.argv[1] + s + "/model.keras").get_weights() for s in out]
d = np.concatenate([np.abs(a - b).ravel() for a, b in zip(*w)])
print("RESULT", d.max(), np.quantile(d, 0.99), out["default"]["test"]["loss"],
      out["mirrored"]["test"]["loss"])
"""


@pytest.mark.slow
def test_mirrored_over_two_cpus_matches_the_default_strategy(tmp_path):
    result = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path) + "/"], env=ENV,
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("RESULT")][0]
    worst, q99, loss_default, loss_mirrored = map(float, line.split()[1:])
    # Adam turns a near-zero gradient into a step of about lr whatever its size, so a
    # rounding-level difference in the all-reduced gradient can flip such a step:
    # bound the worst weight by 2 * lr * steps, and require nearly all weights to agree.
    assert worst <= 2 * 3e-3 * 2 + 1e-6
    assert q99 <= 1e-5
    assert abs(loss_default - loss_mirrored) <= 1e-3 * max(abs(loss_default), 1.0)


SMOKES = {**{r: (r, "--smoke") for r in ("flowers102", "food101", "sun397", "imagenet")},
          **{f"cifar100-{m}": ("cifar100", "--smoke", "--mode", m)
             for m in ("self_distillation", "plain")}}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Every recipe's --smoke run, three processes at a time (much of a smoke run is
    single-threaded tracing and compiling): name -> (exit code, stderr, workdir)."""
    pending, running, done = list(SMOKES.items()), [], {}
    while pending or running:
        while pending and len(running) < 3:
            name, (recipe, *args) = pending.pop(0)
            workdir = tmp_path_factory.mktemp(name)
            with open(workdir / "stderr.txt", "w") as log:  # a file: a pipe could fill up
                proc = subprocess.Popen(_recipe(recipe, *args, "--workdir", str(workdir)),
                                        env=ENV, stdout=subprocess.DEVNULL, stderr=log)
            running.append((name, proc, workdir))
        name, proc, workdir = running.pop(0)
        proc.wait(timeout=600)
        done[name] = (proc.returncode, (workdir / "stderr.txt").read_text(), workdir)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["flowers102", "food101", "sun397", "imagenet"])
def test_every_funmatch_recipe_runs_its_smoke_path(recipe, smoke_runs):
    returncode, stderr, workdir = smoke_runs[recipe]
    assert returncode == 0, stderr[-3000:]
    metrics = json.load(open(workdir / "metrics.json"))
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and "agreement" in metrics["test"]
    assert os.listdir(workdir / "logs"), "no TensorBoard logs"
    assert checkpointing.read_state(str(workdir / "checkpoints"))["epoch"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["self_distillation", "plain"])
def test_cifar100_recipe_runs_its_smoke_path(mode, smoke_runs):
    returncode, stderr, workdir = smoke_runs[f"cifar100-{mode}"]
    assert returncode == 0, stderr[-3000:]
    test = json.load(open(workdir / "metrics.json"))["test"]
    if mode == "plain":
        assert set(test) >= {"accuracy", "loss"}
    else:
        assert {"exit1_top1", "exit2_top1", "exit3_top1", "ensemble_top1"} <= set(test)


@pytest.mark.slow
def test_grid_index_runs_one_point_and_prints_the_summary(tmp_path):
    result = subprocess.run(_recipe("pets", "--smoke", "--grid", "--grid_index", "42",
                                    "--workdir", str(tmp_path)), env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # one point's directory, the grid's shared settings (kdzoo.train.run_dir.check_grid) and
    # the grid's one teacher cache, which the point trained from
    assert sorted(os.listdir(tmp_path)) == ["grid.json", "point-042", "teacher.tcache",
                                            "teacher.tcache.lock"]
    config = json.load(open(tmp_path / "point-042" / "config.json"))
    # 42 = 2 * 20 + 0 * 4 + 2: lr[2], weight_decay[0], temperature[2]
    assert (config["lr"], config["weight_decay"], config["temperature"]) == (3e-3, 1e-5, 5.0)
    assert config["teacher_cache"] == str(tmp_path / "teacher.tcache")
    assert "| 42* |" in result.stdout and "best on minival: point 42" in result.stdout
    # another point (other lr, wd, T) reuses the cache as written: the teacher ran once
    written = os.stat(tmp_path / "teacher.tcache").st_mtime_ns
    again = subprocess.run(_recipe("pets", "--smoke", "--grid_index", "3", "--workdir",
                                   str(tmp_path)), env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert os.stat(tmp_path / "teacher.tcache").st_mtime_ns == written
    assert "| 3 |" in again.stdout or "| 3* |" in again.stdout


@pytest.mark.slow
def test_recipe_help_explains_every_common_flag():
    result = subprocess.run(_recipe("pets", "--helpfull"), env=ENV, capture_output=True,
                            text=True, timeout=300)
    text = result.stdout
    for flag in ("--workdir", "--data_dir", "--strategy", "--epochs", "--batch_size",
                 "--grid_index", "--smoke", "--seed", "--preset", "--variant"):
        assert flag in text, flag


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    import keras
    import tensorflow as tf

    from kdzoo.train import fit_resumable

    x = np.ones((8, 3), "float32")
    y = np.ones((8, 1), "float32")
    y_bad = y.copy()
    y_bad[6] = np.nan  # the 4th step of the 2nd epoch (batch 2) sees a NaN target
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")

    def stream(epoch):
        def gen():
            for e in range(epoch, 3):
                for i in range(0, 8, 2):
                    yield x[i:i + 2], (y if e == 0 else y_bad)[i:i + 2]
        return tf.data.Dataset.from_generator(gen, output_signature=(
            tf.TensorSpec((None, 3)), tf.TensorSpec((None, 1))))

    with pytest.raises(checkpointing.NonFiniteLossError, match=r"epoch 2, step 4"):
        fit_resumable(model, stream, workdir=str(tmp_path), epochs=3, steps_per_epoch=4,
                      verbose=0)
    state = checkpointing.read_state(str(tmp_path / "checkpoints"))
    assert state["epoch"] == 1  # epoch 2 never completed: its NaN weights were not saved
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    fresh.compile(optimizer="sgd", loss="mse")
    assert checkpointing.restore(fresh, str(tmp_path / "checkpoints")) == 1
    assert all(np.isfinite(w).all() for w in fresh.get_weights())


def test_checkpoint_refuses_to_overwrite_with_non_finite_weights(tmp_path):
    import keras
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    saver = checkpointing.ResumableCheckpoint(str(tmp_path))
    saver.set_model(model)
    saver.save(1)
    model.layers[0].kernel.assign(np.full((2, 1), np.inf, "float32"))
    with pytest.raises(checkpointing.NonFiniteLossError, match="not overwriting"):
        saver.save(2)
    assert checkpointing.read_state(str(tmp_path))["epoch"] == 1
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


@pytest.mark.slow
def test_a_smoke_checkpoint_holds_the_student_and_its_optimizer_only(smoke_runs):
    import keras

    import kdzoo  # noqa: F401  (registers kdzoo's layers for loading)
    from kdzoo.distill import paper_optimizer
    returncode, stderr, workdir = smoke_runs["flowers102"]
    assert returncode == 0, stderr[-3000:]
    state = checkpointing.read_state(str(workdir / "checkpoints"))
    student = keras.saving.load_model(str(workdir / "model.keras"))
    optimizer = paper_optimizer(3e-3, 2, 1, 1e-4)  # the recipe's optimizer, on the student
    optimizer.build(student.trainable_variables)
    expected = len(student.weights) + len(optimizer.variables)
    path = str(workdir / "checkpoints" / state["weights"])
    assert checkpointing.checkpoint_variable_count(path) == expected
    assert state["step"] == 2  # --smoke: 8 images, batch 4, 1 epoch = round(8 / 4) steps


def _run_all(commands, timeout=600):
    """Run commands three at a time; returns their CompletedProcess-like (rc, out, err)."""
    out, pending, running = {}, list(commands.items()), []
    while pending or running:
        while pending and len(running) < 3:
            name, cmd = pending.pop(0)
            cmd, env = cmd if isinstance(cmd, tuple) else (cmd, {})
            running.append((name, subprocess.Popen(cmd, env=dict(ENV, **env),
                                                    stdout=subprocess.PIPE,
                                                    stderr=subprocess.PIPE, text=True)))
        name, proc = running.pop(0)
        stdout, stderr = proc.communicate(timeout=timeout)
        out[name] = (proc.returncode, stdout, stderr)
    return out


DRY_KEYS = {"total_steps", "warmup_steps", "batch_size", "train_examples",
            "checkpoint_every_steps", "eval", "teacher", "student", "image_size",
            "teacher_image_size", "precision"}


@pytest.mark.slow
def test_every_recipe_dry_run_prints_the_plan_without_data_or_network(tmp_path):
    env_dir = str(tmp_path / "no-data")  # an empty data_dir: nothing may be read from it
    commands = {r: _recipe(r, "--dry_run", "--data_dir", env_dir, "--workdir", str(tmp_path / r))
                for r in ("flowers102", "pets", "food101", "sun397", "imagenet", "cifar100",
                          "fashion_mnist")}
    commands["pets-bf16"] = _recipe("pets", "--dry_run", "--mixed_precision", "mixed_bfloat16",
                                    "--preset", "long", "--batch_size", "256")
    results = _run_all(commands)
    plans = {}
    for name, (rc, stdout, stderr) in results.items():
        assert rc == 0, (name, stderr[-3000:])
        plans[name] = json.loads(stdout.strip().splitlines()[-1])
        assert DRY_KEYS <= set(plans[name]), (name, plans[name])
    # By hand: round(10,000 * 1,020 / 512) and round(1,000 * 3,312 / 512).
    assert plans["flowers102"]["total_steps"] == 19_922
    assert plans["pets"]["total_steps"] == 6_469
    assert plans["pets"]["eval"] == "resize_small(160)|central_crop(128)"
    assert plans["imagenet"]["eval"] == "resize_small(256)|central_crop(224)"
    assert abs(plans["imagenet"]["train_examples"] - 0.98 * 1_281_167) < 1
    assert plans["imagenet"]["total_steps"] == round(
        1200 * plans["imagenet"]["train_examples"] / 4096)
    assert plans["pets-bf16"]["precision"] == "mixed_bfloat16"
    assert plans["pets-bf16"]["total_steps"] == round(30_000 * 3_312 / 256)
    assert plans["flowers102"]["teacher"] == "bit_r152x2.funmatch_teacher_flowers102_128"
    assert not os.path.exists(env_dir)


@pytest.mark.slow
def test_recipe_command_line_errors_are_one_clear_message(tmp_path):
    keras_home = tmp_path / "keras_home"
    results = _run_all({
        "help": _recipe("pets", "--help"),
        "no-data": (_recipe("pets", "--data_dir", str(tmp_path / "empty"), "--workdir",
                            str(tmp_path / "w")), {"KERAS_HOME": str(keras_home)}),
        "bad-flag": _recipe("pets", "--batch_sise", "8"),
        "bad-teacher": _recipe("pets", "--dry_run", "--teacher", str(tmp_path / "no.npz")),
    })
    rc, text, _ = results["help"]
    for flag in ("workdir", "data_dir", "batch_size", "epochs", "[no]dry_run",
                 "checkpoint_every_steps", "preset", "variant", "teacher", "[no]smoke"):
        assert f"--{flag}:" in text, flag
    rc, _, err = results["no-data"]
    assert rc != 0 and "Traceback" not in err
    assert "tfds build oxford_iiit_pet" in err and "--data_dir" in err
    # Nothing was fetched before the data check (Keras itself only writes keras.json).
    fetched = [p for p in keras_home.rglob("*") if p.is_file() and p.name != "keras.json"]
    assert not fetched and not (keras_home / "kdzoo").exists(), fetched
    rc, _, err = results["bad-flag"]
    assert rc != 0 and "Traceback" not in err and "batch_sise" in err
    rc, _, err = results["bad-teacher"]
    assert rc != 0 and "Traceback" not in err and "no.npz" in err and "--teacher" in err


def test_a_teacher_cache_too_big_for_the_disk_is_refused_before_the_teacher_runs(
        tmp_path, monkeypatch):
    """flowers102 at the paper's long schedule: 2M steps x 512 views x 102 float16 logits."""
    import shutil
    import types

    from kdzoo.train import runner as train
    from kdzoo.errors import RecipeError

    distiller = types.SimpleNamespace(num_classes=102, teachers=[object()])
    schedule = types.SimpleNamespace(total_steps=2_000_000)
    monkeypatch.setattr(train, "_funmatch_setup",
                        lambda run, strategy: (None, schedule, distiller, None, 1020))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: types.SimpleNamespace(free=50e9))
    run = train.FunMatchRun(dataset="oxford_flowers102", teacher=None, student=None,
                            workdir=str(tmp_path), batch_size=512)
    with pytest.raises(RecipeError) as err:
        train.write_teacher_cache(run, str(tmp_path / "teacher.tcache"))
    need = 2_000_000 * 512 * 102 * 2 / 1e9
    assert f"{need:.1f} GB" in str(err.value) and "50.0 GB are free" in str(err.value)
    assert "--nogrid_cache" in str(err.value)
    assert not os.path.exists(tmp_path / "teacher.tcache")
