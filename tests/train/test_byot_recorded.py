"""The BYOT table over several machines: runs recorded in the committed evidence are kept
(recipes/byot_recorded.py), with their provenance, and never trained again."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "recipes"))

STUDY = dict(dataset="fashion_mnist_32", train_per_class=1000, subset_seed=0, image_size=32,
             epochs=15, batch_size=128, lr=0.1, weight_decay=5e-4, version="journal",
             alpha=0.3, temperature=3.0, feature_weight=0.03, mixed_precision="float32",
             crop="pad", pad_fill=0, flip=True, autoaugment=None, cutout=16,
             archs={"cifar_resnet18": {"base_width": 8}, "cifar_vgg19_bn": {"width_divisor": 8}},
             methods=("baseline", "self_distillation", "kd"), seeds=(0, 1),
             kd=dict(teacher="cifar_resnet18", teacher_build={"base_width": 16},
                     temperature=3.0, alpha=0.3),
             sizing_s_per_epoch={}, sizing_s_per_run=60)


def _row(arch, method, seed, exit_, top1):
    return dict(arch=arch, method=method, seed=seed, exit=exit_, top1_last=top1,
                top1_best=top1, flops=1000, train_s_per_epoch=2.0, best_epoch=3, epochs=15)


def _legacy_evidence(path, study=STUDY):
    """Evidence as reports wrote it before per-run provenance: rows, claim 5 inside the
    claims, one commit for the whole report."""
    rows = [_row("cifar_resnet18", "baseline", 0, "output", 80.0),
            _row("cifar_resnet18", "kd_teacher", 0, "output", 90.0),
            *[_row("cifar_resnet18", "self_distillation", 0, e, 81.0 + i)
              for i, e in enumerate((1, 2, 3, 4, "ensemble"))],
            _row("cifar_vgg19_bn", "baseline", 1, "output", 70.0)]
    early = dict(arch="cifar_resnet18", seed=0, workdir="/gone/sd0", thresholds=[0.9],
                 test=dict(loss_vs_deepest_points=0.1), timing=dict(speedup_wall=1.5))
    record = dict(commit="c0ffee", command="byot_fashion_mnist.py --report_only",
                  cpu_flags=["avx512f"], precision="float32", rows=rows,
                  study=json.loads(json.dumps(study, default=list)),
                  claims=[dict(claim="(5) early exit", numbers=dict(runs=[early]))])
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return record


def _entries(study=STUDY):
    """(key, None) per planned run: None, as no work directory holds any of them here."""
    keys = [dict(arch="cifar_resnet18", method="kd_teacher", seed=0, epochs=15)] + [
        dict(arch=a, method=m, seed=s, epochs=15)
        for s in study["seeds"] for a in study["archs"] for m in study["methods"]]
    return [(k, None) for k in keys]


def test_recorded_runs_are_grouped_with_their_provenance_and_the_teacher_is_not_kept(tmp_path):
    import byot_recorded
    path = str(tmp_path / "byot.json")
    _legacy_evidence(path)
    recorded = byot_recorded.load(path, STUDY)
    assert sorted(recorded) == [("cifar_resnet18", "baseline", 0),
                                ("cifar_resnet18", "self_distillation", 0),
                                ("cifar_vgg19_bn", "baseline", 1)]  # no kd_teacher
    sd = recorded["cifar_resnet18", "self_distillation", 0]
    assert [r["exit"] for r in sd["rows"]] == [1, 2, 3, 4, "ensemble"]
    assert sd["early_exit"]["workdir"] == "/gone/sd0"  # from the old claim 5's numbers
    assert sd["provenance"]["reported_with"]["commit"] == "c0ffee"
    assert recorded["cifar_vgg19_bn", "baseline", 1]["early_exit"] is None
    assert byot_recorded.load(str(tmp_path / "none.json"), STUDY) == {}


@pytest.mark.parametrize("change", [dict(epochs=16), dict(lr=0.05), dict(version="iccv2019"),
                                    dict(kd=dict(STUDY["kd"], temperature=4.0))])
def test_runs_recorded_under_other_settings_are_not_kept(tmp_path, change):
    import byot_recorded
    path = str(tmp_path / "byot.json")
    _legacy_evidence(path)
    assert byot_recorded.load(path, dict(STUDY, **change)) == {}


def test_another_width_of_one_arch_drops_that_arch_only(tmp_path):
    import byot_recorded
    path = str(tmp_path / "byot.json")
    _legacy_evidence(path)
    wider = dict(STUDY, archs=dict(STUDY["archs"], cifar_resnet18={"base_width": 16}))
    assert sorted(byot_recorded.load(path, wider)) == [("cifar_vgg19_bn", "baseline", 1)]


def test_only_unrecorded_runs_are_trained_and_the_teacher_only_for_kd(tmp_path):
    import byot_recorded
    path = str(tmp_path / "byot.json")
    _legacy_evidence(path)
    recorded = byot_recorded.load(path, STUDY)
    entries = _entries()
    todo = byot_recorded.still_to_train(entries, recorded, finished=lambda run: False)
    names = [(k["arch"], k["method"], k["seed"]) for k, _ in todo]
    assert names[0] == ("cifar_resnet18", "kd_teacher", 0)  # kd runs remain: teacher first
    assert len(names) == len(entries) - 3 and not set(names) & set(recorded)
    no_kd = [(k, r) for k, r in entries if k["method"] != "kd"]
    todo = byot_recorded.still_to_train(no_kd, recorded, finished=lambda run: False)
    assert all(k["method"] != "kd_teacher" for k, _ in todo)
    # Every kd run finished here: the teacher is not needed again.
    todo = byot_recorded.still_to_train(entries, recorded, finished=lambda run: True)
    assert all(k["method"] != "kd_teacher" for k, _ in todo)


def test_a_report_on_a_machine_without_the_runs_keeps_the_recorded_rows(tmp_path):
    """The next report (no work directories, claim 5 not measured) carries the recorded
    rows, their provenance and claim 5's runs into the new evidence, and reads it back."""
    import byot_recorded
    import byot_report
    path = str(tmp_path / "results" / "byot.json")
    os.makedirs(os.path.dirname(path))
    old = _legacy_evidence(path)
    byot_report.write_report(STUDY, _entries(), str(tmp_path / "runs"), path,
                             early_exit_repeats=0)
    new = json.load(open(path))
    kept = [r for r in old["rows"] if r["method"] != "kd_teacher"]
    def _same(rows):
        return sorted(json.dumps(r, sort_keys=True) for r in rows)
    assert _same(new["rows"]) == _same(kept)
    assert (new["finished_runs"], new["planned_runs"], new["complete"]) == (3, 13, False)
    assert {(p["arch"], p["method"], p["seed"], p["source"]) for p in new["runs"]} == {
        ("cifar_resnet18", "baseline", 0, "evidence"),
        ("cifar_resnet18", "self_distillation", 0, "evidence"),
        ("cifar_vgg19_bn", "baseline", 1, "evidence")}
    assert [r["workdir"] for r in new["early_exit"]["runs"]] == ["/gone/sd0"]
    assert new["claims"][4]["verdict"].startswith("not measured")  # repeats 0: said so
    again = byot_recorded.load(path, STUDY)  # the new format reads back the same runs
    assert sorted(again) == [("cifar_resnet18", "baseline", 0),
                             ("cifar_resnet18", "self_distillation", 0),
                             ("cifar_vgg19_bn", "baseline", 1)]
    assert again["cifar_resnet18", "baseline", 0]["provenance"]["reported_with"][
        "commit"] == "c0ffee"
    assert again["cifar_resnet18", "self_distillation", 0]["early_exit"]["source"] == "evidence"
