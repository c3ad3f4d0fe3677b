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


def _independent_top1(run, images, labels):
    """Top-1 % per output of the saved network (the last epoch), then of the best epoch's
    ``best_exit.weights.h5`` loaded into it: ``(last, best)``, each ``(per output, mean of
    the outputs' logits)``. One load and one traced predict serve both readings."""
    import keras
    import kdzoo  # noqa: F401
    model = keras.saving.load_model(os.path.join(run.workdir, "model.keras"))
    found = []
    for weights in (None, os.path.join(run.workdir, "best_exit.weights.h5")):
        if weights:
            model.load_weights(weights)
        out = model.predict(images, batch_size=1000, verbose=0)
        outs = out if isinstance(out, list) else [out]
        found.append(([100 * float(np.mean(np.argmax(o, -1) == labels)) for o in outs],
                      100 * float(np.mean(np.mean(np.stack(outs), 0).argmax(-1) == labels))))
    return tuple(found)


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


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    """The table's tiny real runs, trained once for this file's slow tests: ResNet-18 at
    width 2 (kd teacher width 4) on 20 images, 2 epochs of 2 steps; baseline and self-
    distillation over seeds 0 and 1 (the table's mean ± std and claim 5's every-SD-run
    are checked on two seeds), kd over seed 0 only (its cell's formula is the same
    summary's). ``(settings, entries, their work directory, training wall seconds)``."""
    import time

    import fashion_mnist_report
    byot, s = _settings()
    s = dict(s, archs={"cifar_resnet18": {"base_width": 2}}, epochs=2, train_per_class=2,
             batch_size=10, seeds=(0, 1), methods=("baseline", "self_distillation", "kd"),
             kd=dict(s["kd"], teacher_build={"base_width": 4}))
    workdir = str(tmp_path_factory.mktemp("byot"))
    entries = [(k, r) for k, r in byot.plan_runs(s, workdir)
               if (k["method"], k["seed"]) != ("kd", 1)]
    start = time.perf_counter()
    fashion_mnist_report.train_all(entries)  # the teacher first: the kd runs read its file
    return s, entries, workdir, time.perf_counter() - start


@pytest.mark.slow
def test_the_report_of_tiny_runs_matches_an_independent_measurement(tmp_path, tiny_table):
    import byot_report
    s, entries, workdir, wall = tiny_table
    evidence = str(tmp_path / "results" / "byot.json")
    # One timed window per runner for claim 5 (the recipe's --early_exit_repeats): only
    # its list of runs is checked here; its timing, by the claim-5 test below.
    text = byot_report.write_report(s, entries, workdir, evidence,
                                    early_exit_repeats=1)
    record = json.load(open(evidence))
    assert (record["planned_runs"], record["finished_runs"], record["complete"]) == (6, 6, True)
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
        last, best = _independent_top1(run, images, labels)
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
    kd = [mine["kd", 0]["output"]["top1_best"]]  # one seed: std 0.00
    cells = [c.strip() for c in kd_line.strip("|").split("|")]
    assert cells[2] == f"{np.mean(base):.2f} ± {np.std(base):.2f}"
    assert cells[3:-1] == ["—"] * 4  # one output: no exits
    assert cells[-1] == f"{np.mean(kd):.2f} ± {np.std(kd):.2f}"
    assert mine["kd_teacher", 0]["output"]["flops"] > mine["kd", 0]["output"]["flops"]


def _hand_early_exit_top1(sd, threshold, images, labels):
    """The exit rule by hand: the first shallow exit whose top softmax > threshold answers."""
    exits = [np.asarray(z, np.float64) for z in sd.predict(images, batch_size=500, verbose=0)]
    answer = exits[-1].argmax(-1)
    open_ = np.ones(len(labels), bool)
    for z in exits[:-1]:
        p = np.exp(z - z.max(-1, keepdims=True))
        leave = open_ & ((p / p.sum(-1, keepdims=True)).max(-1) > threshold)
        answer[leave] = z[leave].argmax(-1)
        open_ &= ~leave
    return 100 * float(np.mean(answer == labels)), 100 * float(np.mean(exits[-1].argmax(-1)
                                                                        == labels))


@pytest.mark.slow
def test_claim_5_on_a_tiny_run_calibrates_on_minival_only_and_times_both(tiny_table):
    """Claim 5's measurement (recipes/byot_early_exit.py) on the table's tiny SD run of
    seed 0 (here, not in test_byot_claims.py, to share this file's trained runs)."""
    import byot_claims as bc
    import byot_early_exit as be
    from kdzoo.data import fashion_mnist
    from kdzoo.distill.self_distill.early_exit import exit_flops
    s, entries, _, _ = tiny_table
    picked = [(k, r) for k, r in entries if k["seed"] == 0 and k["method"] in (
        "baseline", "self_distillation")]
    run = next(r for k, r in picked if k["method"] == "self_distillation")
    minival = be.split_arrays("fashion_mnist_32", "minival")
    test = be.split_arrays("fashion_mnist_32", "test")
    assert minival[0].shape == (5000, 32, 32, 1) and test[0].shape == (10000, 32, 32, 1)
    x_train, y_train = fashion_mnist.load("train")  # minival = the last 5,000 training images
    assert np.array_equal(minival[1], y_train[55000:])
    assert np.array_equal(minival[0][:, 2:30, 2:30], x_train[55000:].astype("float32"))
    early = be.measure_all(s, picked, repeats=2)  # the SD run only, not the baseline
    assert [(r["arch"], r["seed"], r["workdir"]) for r in early["runs"]] == [
        ("cifar_resnet18", 0, run.workdir)]
    got = early["runs"][0]
    sd = be.load_network(run)
    shuffled = (test[0][:1000], np.random.default_rng(0).permutation(test[1])[:1000])
    other = be.measure_network(sd, minival, shuffled, repeats=1)
    assert other["thresholds"] == got["thresholds"] and other["minival"] == got["minival"]
    t = got["test"]
    ee_top1, deep_top1 = _hand_early_exit_top1(sd, got["thresholds"][0], *test)
    assert t["early_exit_top1"] == pytest.approx(ee_top1, abs=0.011)
    assert t["deepest_top1"] == pytest.approx(deep_top1, abs=0.011)
    assert t["loss_vs_deepest_points"] == pytest.approx(deep_top1 - ee_top1, abs=0.021)
    assert sum(t["exit_fractions"]) == pytest.approx(1.0)
    # FLOPs per image over the plain network's: above 1 when few rows leave early (every
    # shallow head is paid for), as for this barely trained network.
    to_exit = np.array(exit_flops(sd)["to_exit"], float)
    assert t["flops_fraction"] == pytest.approx(
        float(np.dot(t["exit_fractions"], to_exit)) / t["full_flops"])
    assert t["full_flops"] < to_exit[-1] and t["flops_saving"] == pytest.approx(
        1 - t["flops_fraction"])
    timing = got["timing"]
    assert set(timing["windows"]) == {"early_exit", "whole", "chained"}
    assert all(len(ws) == 2 and all(w["wall_s"] > 0 and w["cpu_s"] > 0 for w in ws)
               for ws in timing["windows"].values())
    assert timing["speedup_wall"] > 0 and timing["speedup_cpu"] > 0
    assert timing["baseline"] in ("whole", "chained")
    assert early["settings"]["repeats"] == 2
    verdict = bc.claim_early_exit(early)[0]
    ok = t["loss_vs_deepest_points"] <= 0.5 and timing["speedup_wall"] > 1
    assert verdict == ("reproduced" if ok else "not reproduced")
    assert be.measure_all(s, [], repeats=0)["skipped"].startswith("--early_exit_repeats=0")
