"""Issue 28, the BYOT table: the planner of recipes/byot_fashion_mnist.py and its report.

The report is checked on tiny real runs against figures computed here from the saved
models on the test images padded by hand (not from the report's own reading).
"""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "recipes"))


@pytest.fixture(scope="module", autouse=True)
def own_recipe_flags():
    """The recipes share absl's one FLAGS, and each defines the common flags (--workdir,
    ...), so a worker that already imported another recipe (fashion_mnist.py, for the
    sections tests) could not import this one. Here the other recipes' flags are set
    aside while this file's tests run, and put back after, with this recipe unloaded."""
    from absl import flags
    saved = dict(flags.FLAGS._flags())
    for name in {f.name for f in saved.values()} - _absl_own(saved):
        delattr(flags.FLAGS, name)
    yield
    sys.modules.pop("byot_fashion_mnist", None)
    for name in {f.name for f in flags.FLAGS._flags().values()} - _absl_own(saved):
        delattr(flags.FLAGS, name)
    for name, flag in saved.items():
        if name == flag.name and name not in flags.FLAGS:
            flags.FLAGS[name] = flag


def _absl_own(flag_dict):
    """absl's and pytest-independent library flags (not defined by a recipe)."""
    from absl import flags
    recipes = {"common", "fashion_mnist", "byot_fashion_mnist", "fashion_mnist_teacher",
               "cifar100", "__main__"}
    return {f.name for f in flag_dict.values()
            if flags.FLAGS.find_module_defining_flag(f.name, "") not in recipes}


def _settings(*argv):
    import byot_fashion_mnist as byot
    byot.FLAGS.unparse_flags()
    byot.FLAGS(["byot_fashion_mnist.py", *argv])
    return byot, byot.settings()


def test_the_whole_table_is_planned_seed_by_seed_after_the_kd_teacher():
    byot, s = _settings()
    entries = byot.plan_runs(s, "/tmp/byot")
    assert len(entries) == 1 + 3 * 4 * 3  # the kd teacher, then archs x methods x seeds
    (tkey, teacher), rest = entries[0], entries[1:]
    assert [k["seed"] for k, _ in rest] == sorted(k["seed"] for k, _ in rest)
    assert all(r is not None for _, r in entries)
    assert len({r.workdir for _, r in entries}) == 37
    # The teacher: STUDY["kd"]'s arch and width, baseline's recipe, seed 0, in its own dir.
    assert (tkey["method"], tkey["arch"], teacher.seed, teacher.method) == (
        "kd_teacher", "cifar_resnet18", 0, "labels")
    assert teacher.workdir == "/tmp/byot/teacher/cifar_resnet18_w16"
    assert teacher.model.keywords["build_options"] == {"base_width": 16}
    base = next(r for k, r in rest if (k["arch"], k["method"], k["seed"]) == (
        "cifar_resnet18", "baseline", 0))
    same = ("dataset", "epochs", "batch_size", "crop", "pad_fill", "flip", "cutout",
            "train_per_class", "subset_seed", "log_every_steps", "version", "mixed_precision")
    assert [getattr(teacher, f) for f in same] == [getattr(base, f) for f in same]
    assert teacher.optimizer.args == base.optimizer.args
    # Every kd run of every arch and seed reads that one teacher file.
    kd = [r for k, r in rest if k["method"] == "kd"]
    assert len(kd) == 9 and {r.method for r in kd} == {"knowledge_distillation"}
    assert {r.teacher for r in kd} == {"/tmp/byot/teacher/cifar_resnet18_w16/model.keras"}
    assert {(r.alpha, r.temperature, r.version) for r in kd} == {(0.3, 3.0, None)}
    by = {(k["arch"], k["method"]): r for k, r in rest if k["seed"] == 0}
    for (arch, method), run in by.items():
        assert (run.dataset, run.train_per_class, run.image_size, run.epochs) == (
            "fashion_mnist_32", 1000, 32, s["epochs"])
        assert (run.crop, run.pad_fill, run.flip, run.autoaugment, run.cutout) == (
            "pad", 0, True, None, 16)
        assert run.version == ("journal" if method in ("self_distillation",
                                                       "deep_supervision") else None)
        assert run.best_epoch_report and run.eval_roles == ("test",)
        assert run.log_every_steps == round(s["epochs"] * 10000 / 128) // s["epochs"]
        assert (run.teacher is None) == (method != "kd")
        assert run.model.keywords["build_options"] == s["archs"][arch]
    assert by["cifar_vgg19_bn", "baseline"].method == "labels"
    assert by["cifar_wrn20_8", "deep_supervision"].method == "deep_supervision"


def test_a_part_of_the_table_and_bad_selections():
    byot, s = _settings("--arch", "cifar_vgg19_bn", "--methods", "baseline,kd", "--seeds", "2")
    entries = byot.plan_runs(s, "/tmp/byot")
    assert [(k["arch"], k["method"], k["seed"]) for k, _ in entries] == [
        ("cifar_resnet18", "kd_teacher", 0), ("cifar_vgg19_bn", "baseline", 2),
        ("cifar_vgg19_bn", "kd", 2)]
    _, s = _settings("--methods", "baseline,self_distillation")
    assert all(k["method"] != "kd_teacher" for k, _ in byot.plan_runs(s, "/tmp/byot"))
    with pytest.raises(SystemExit):
        _settings("--arch", "cifar_resnet19")


def test_the_dry_run_lists_the_kd_teacher_before_the_kd_runs(capsys):
    byot, _ = _settings("--dry_run", "--workdir", "/tmp/byot_dry", "--seeds", "0,1")
    byot.main([])
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert plan["not_runnable"] == [] and plan["runs"] == plan["runnable_runs"] == 1 + 3 * 4 * 2
    assert plan["runs_by_method"] == {"kd_teacher": 1, "baseline": 6, "self_distillation": 6,
                                      "deep_supervision": 6, "kd": 6}
    assert plan["kd_teacher"] == [dict(arch="cifar_resnet18", build={"base_width": 16}, seed=0,
                                       workdir="/tmp/byot_dry/teacher/cifar_resnet18_w16",
                                       order=0, kd_runs=6)]
    assert not os.path.exists("/tmp/byot_dry")  # a plan trains and writes nothing


def test_the_subset_and_the_selection_split_are_disjoint_and_the_images_are_32px():
    from kdzoo.data import get_spec, load_split, split_ranges
    spec = get_spec("fashion_mnist_32")
    (tb, t0, t1), = split_ranges(spec.train_split, spec.base_split_sizes)
    (mb, m0, m1), = split_ranges(spec.minival_split, spec.base_split_sizes)
    assert tb == mb == "train" and (t1 <= m0) and m1 - m0 == 5000
    image, _ = next(iter(load_split(spec, "test")))
    assert image.shape == (32, 32, 1)


def _padded_test():
    from kdzoo.data import fashion_mnist
    x, y = fashion_mnist.load("test")
    return np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))).astype("float32"), y


def _independent_top1(run, images, labels, weights=None):
    """Top-1 % per output of the saved network (or of ``weights`` loaded into it)."""
    import keras
    import kdzoo  # noqa: F401
    model = keras.saving.load_model(os.path.join(run.workdir, "model.keras"))
    if weights:
        model.load_weights(weights)
    out = model.predict(images, batch_size=1000, verbose=0)
    outs = out if isinstance(out, list) else [out]
    acc = [100 * float(np.mean(np.argmax(o, -1) == labels)) for o in outs]
    ens = 100 * float(np.mean(np.mean(np.stack(outs), 0).argmax(-1) == labels))
    return acc, ens


def _hand_flops(model):
    """2 x MACs of Conv2D / DepthwiseConv2D / Dense, from kernel and output shapes."""
    import keras
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, c, m = layer.kernel.shape
            total += 2 * kh * kw * c * m * np.prod(layer.output.shape[1:3])
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            total += 2 * kh * kw * cin * cout * np.prod(layer.output.shape[1:3])
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * np.prod(layer.kernel.shape)
    return int(total)


@pytest.mark.slow
def test_the_report_of_tiny_runs_matches_an_independent_measurement(tmp_path):
    import time

    import byot_report
    import fashion_mnist_report
    byot, s = _settings()
    s = dict(s, archs={"cifar_resnet18": {"base_width": 2}}, epochs=2, train_per_class=2,
             batch_size=10, seeds=(0, 1), methods=("baseline", "self_distillation", "kd"),
             kd=dict(s["kd"], teacher_build={"base_width": 4}))
    entries = byot.plan_runs(s, str(tmp_path / "runs"))
    start = time.perf_counter()
    fashion_mnist_report.train_all(entries)  # the teacher first: the kd runs read its file
    wall = time.perf_counter() - start
    evidence = str(tmp_path / "results" / "byot.json")
    text = byot_report.write_report(s, entries, str(tmp_path / "runs"), evidence)
    record = json.load(open(evidence))
    assert (record["planned_runs"], record["finished_runs"], record["complete"]) == (7, 7, True)
    assert os.path.getsize(tmp_path / "results" / "byot_cifar_resnet18.png") > 1000
    claims = {c["claim"][:3]: c for c in record["claims"]}  # byot_claims.py; its own tests
    assert claims["(3)"]["verdict"].startswith("not measured (") and "deep_supervision" in (
        claims["(3)"]["numbers"]["not_measured"][0])  # no deep supervision planned here
    assert claims["(2)"]["verdict"].startswith("not measured (")  # one depth
    assert [(r["arch"], r["seed"]) for r in claims["(5)"]["numbers"]["runs"]] == [
        ("cifar_resnet18", 0), ("cifar_resnet18", 1)]  # every finished SD run, reloaded
    assert "(1) the deepest SD exit beats the baseline: " in text
    images, labels = _padded_test()
    mine = {}
    for key, run in entries:
        rows = {r["exit"]: r for r in record["rows"]
                if (r["method"], r["seed"]) == (key["method"], key["seed"])}
        last = _independent_top1(run, images, labels)
        best = _independent_top1(run, images, labels,
                                 os.path.join(run.workdir, "best_exit.weights.h5"))
        if key["method"] in ("baseline", "kd", "kd_teacher"):  # one output
            assert set(rows) == {"output"}
            assert rows["output"]["top1_last"] == pytest.approx(last[0][0], abs=0.011)
            assert rows["output"]["top1_best"] == pytest.approx(best[0][0], abs=0.011)
            net = run.model()
            assert rows["output"]["flops"] == _hand_flops(net)
        else:
            assert set(rows) == {1, 2, 3, 4, "ensemble"} and isinstance(rows[1]["exit"], int)
            for i in range(4):
                assert rows[i + 1]["top1_last"] == pytest.approx(last[0][i], abs=0.011)
                assert rows[i + 1]["top1_best"] == pytest.approx(best[0][i], abs=0.011)
            assert rows["ensemble"]["top1_last"] == pytest.approx(last[1], abs=0.011)
            flops = [rows[i]["flops"] for i in (1, 2, 3, 4)]
            assert flops == sorted(flops) and rows["ensemble"]["flops"] >= flops[-1]
        assert all(0 < r["train_s_per_epoch"] < wall for r in rows.values())
        mine[key["method"], key["seed"]] = rows
    sd_ens = [mine["self_distillation", seed]["ensemble"]["top1_best"] for seed in (0, 1)]
    base = [mine["baseline", seed]["output"]["top1_best"] for seed in (0, 1)]
    line = next(x for x in text.splitlines() if x.startswith("| cifar_resnet18 | self_dist"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == f"{np.mean(base):.2f} ± {np.std(base):.2f}"
    assert cells[-1] == f"{np.mean(sd_ens):.2f} ± {np.std(sd_ens):.2f}"
    kd_line = next(x for x in text.splitlines() if x.startswith("| cifar_resnet18 | kd"))
    kd = [mine["kd", seed]["output"]["top1_best"] for seed in (0, 1)]
    cells = [c.strip() for c in kd_line.strip("|").split("|")]
    assert cells[2] == f"{np.mean(base):.2f} ± {np.std(base):.2f}"
    assert cells[3:-1] == ["—"] * 4  # one output: no exits
    assert cells[-1] == f"{np.mean(kd):.2f} ± {np.std(kd):.2f}"
    assert mine["kd_teacher", 0]["output"]["flops"] > mine["kd", 0]["output"]["flops"]
