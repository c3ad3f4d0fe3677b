"""Issue 28's five claims: the verdict rules of recipes/byot_claims.py on rows written here
(each verdict both ways, and a missing method). Claim 5's measurement
(recipes/byot_early_exit.py) on a tiny real self-distillation run is checked in
test_byot_table.py, on the tiny runs that file trains for the report's test."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "recipes"))

import byot_claims as bc  # noqa: E402

ARCHS = ["cifar_resnet18", "cifar_vgg19_bn"]


def _rows(arch, method, by_seed, train_s=40.0, exits=None):
    """Rows of one (arch, method): ``by_seed`` {seed: top1 of every exit (list) or of
    the one output (float)}; top1_last = top1_best - 1."""
    rows = []
    for seed, top1 in by_seed.items():
        named = (dict(zip(exits or range(1, len(top1) + 1), top1)) if isinstance(top1, list)
                 else {"output": top1})
        rows += [dict(arch=arch, method=method, seed=seed, exit=e, top1_best=v, top1_last=v - 1,
                      flops=1, train_s_per_epoch=train_s) for e, v in named.items()]
    return rows


def _table(sd_deep=(87.0, 88.0, 89.0), base=(85.0, 85.0, 86.0), arch="cifar_resnet18"):
    sd = _rows(arch, "self_distillation",
               {s: [70.0, 80.0, 85.0, v] for s, v in enumerate(sd_deep)}, train_s=40.0)
    return sd + _rows(arch, "baseline", {s: v for s, v in enumerate(base)}, train_s=30.0)


def _verdict(claims, i):
    return claims[i]["verdict"]


def test_claim_1_reproduced_with_its_numbers_and_not_reproduced():
    verdict, n = bc.claim_sd_beats_baseline(_table(), ["cifar_resnet18"])
    assert verdict == "reproduced"
    m = n["per_arch"]["cifar_resnet18"]
    assert m["deepest_exit"] == 4
    assert m["a"]["mean"] == pytest.approx(88.0) and m["b"]["mean"] == pytest.approx(85 + 1 / 3,
                                                                                     abs=1e-4)
    assert m["a"]["std"] == pytest.approx(np.sqrt(2 / 3), abs=1e-4)  # population std
    assert m["gain"] == pytest.approx(88 - 85 - 1 / 3, abs=1e-3)
    assert m["paired_gains"] == {0: 2.0, 1: 3.0, 2: 3.0}
    assert m["last"]["gain"] == pytest.approx(m["gain"], abs=1e-3)  # both shifted by 1
    rows = _table() + _table(sd_deep=(80.0, 81.0, 82.0), arch="cifar_vgg19_bn")
    verdict, n = bc.claim_sd_beats_baseline(rows, ARCHS)
    assert verdict == "not reproduced"  # one arch of two loses
    assert n["per_arch"]["cifar_vgg19_bn"]["gain"] < 0 < n["per_arch"]["cifar_resnet18"]["gain"]


def test_claim_1_without_baseline_runs_is_not_measured_and_a_missing_arch_is_named():
    sd_only = [r for r in _table() if r["method"] == "self_distillation"]
    verdict, n = bc.claim_sd_beats_baseline(sd_only, ["cifar_resnet18"])
    assert verdict.startswith("not measured (") and "baseline" in verdict
    verdict, n = bc.claim_sd_beats_baseline(_table(), ARCHS)  # vgg has no run at all
    assert verdict == "reproduced" and list(n["per_arch"]) == ["cifar_resnet18"]
    assert n["not_measured"] and "cifar_vgg19_bn" in n["not_measured"][0]


def test_claim_2_gain_rising_with_depth_falling_and_one_depth():
    rising = (_table(sd_deep=(86.0, 86.0, 86.0)) +  # resnet18: +0.67
              _table(sd_deep=(88.0, 88.0, 88.0), arch="cifar_vgg19_bn"))  # vgg19: +2.67
    verdict, n = bc.claim_deeper_gains_more(rising, ARCHS)
    assert verdict == "reproduced"
    assert [(x["arch"], x["depth"]) for x in n["by_depth"]] == [("cifar_resnet18", 18),
                                                                ("cifar_vgg19_bn", 19)]
    assert n["slope_points_per_layer"] == pytest.approx(2.0, abs=1e-3)
    falling = (_table(sd_deep=(88.0, 88.0, 88.0)) +
               _table(sd_deep=(86.0, 86.0, 86.0), arch="cifar_vgg19_bn"))
    assert bc.claim_deeper_gains_more(falling, ARCHS)[0] == "not reproduced"
    assert bc.claim_deeper_gains_more(_table(), ARCHS)[0].startswith("not measured (")


def _ds(arch="cifar_resnet18", exits=(65.0, 78.0, 84.0, 86.0)):
    return _rows(arch, "deep_supervision", {s: list(exits) for s in range(3)})


def test_claim_3_every_exit_both_ways_and_without_deep_supervision():
    verdict, n = bc.claim_shallow_exits(_table() + _ds(), ["cifar_resnet18"])
    assert verdict == "reproduced"
    per_exit = n["per_arch"]["cifar_resnet18"]
    assert [round(per_exit[k]["gain"], 4) for k in (1, 2, 3, 4)] == [5.0, 2.0, 1.0, 2.0]
    one_exit_loses = _ds(exits=(65.0, 81.0, 84.0, 86.0))  # exit 2: SD 80 < DS 81
    assert bc.claim_shallow_exits(_table() + one_exit_loses, ["cifar_resnet18"])[0] == (
        "not reproduced")
    assert bc.claim_shallow_exits(_table(), ["cifar_resnet18"])[0].startswith("not measured (")


def _kd(top1=(87.5, 87.5, 87.5), train_s=60.0, arch="cifar_resnet18"):
    return _rows(arch, "kd", {s: v for s, v in enumerate(top1)}, train_s=train_s)


def test_claim_4_accuracy_and_the_training_time_ratio_both_ways():
    verdict, n = bc.claim_kd(_table() + _kd(), ["cifar_resnet18"])
    m = n["per_arch"]["cifar_resnet18"]
    assert verdict == "reproduced"
    assert m["kd_over_sd"] == pytest.approx(60 / 40) and m["paper_kd_over_sd"] == 4.6
    assert m["gain"] == pytest.approx(0.5) and m["matches"]
    teacher = _rows("cifar_resnet18", "kd_teacher", {0: 90.0}, train_s=100.0)
    m = bc.claim_kd(_table() + _kd() + teacher, ["cifar_resnet18"])[1]["per_arch"]
    assert m["cifar_resnet18"]["kd_with_teacher_over_sd"] == pytest.approx(160 / 40)
    # Within the seeds' spread (SD std 0.816) still matches; 2 points below does not.
    assert bc.claim_kd(_table() + _kd(top1=(88.7,) * 3), ["cifar_resnet18"])[0] == "reproduced"
    assert bc.claim_kd(_table() + _kd(top1=(90.0,) * 3), ["cifar_resnet18"])[0] == (
        "not reproduced")
    assert bc.claim_kd(_table() + _kd(train_s=30.0), ["cifar_resnet18"])[0] == (
        "not reproduced")  # kd trains faster than SD
    assert bc.claim_kd(_table(), ["cifar_resnet18"])[0].startswith("not measured (")


def _early(loss=0.3, speedup=1.4):
    run = dict(arch="cifar_resnet18", seed=0, thresholds=[0.8] * 3,
               test=dict(early_exit_top1=88.0, deepest_top1=88.0 + loss, ensemble_top1=89.0,
                         loss_vs_deepest_points=loss, flops_fraction=0.5),
               timing=dict(speedup_wall=speedup, speedup_cpu=speedup))
    return dict(runs=[run], settings={})


def test_claim_5_loss_and_speed_up_both_ways_and_not_run():
    assert bc.claim_early_exit(_early())[0] == "reproduced"
    assert bc.claim_early_exit(_early(loss=0.7))[0] == "not reproduced"
    assert bc.claim_early_exit(_early(speedup=0.9))[0] == "not reproduced"
    assert bc.claim_early_exit(dict(runs=[], settings={}))[0].startswith("not measured (")
    skipped = bc.claim_early_exit(dict(skipped="--early_exit_repeats=0: early exit not "
                                               "measured"))[0]
    assert skipped.startswith("not measured (--early_exit_repeats=0")


def test_judge_says_the_table_is_incomplete_and_the_text_gives_every_verdict():
    claims = bc.judge(_table() + _kd(), ARCHS, _early(), planned=10, finished=4)
    assert [c["verdict"].split(" (")[0] for c in claims] == [
        "reproduced", "not measured", "not measured", "reproduced", "reproduced"]
    assert all(c["numbers"]["table"] == "incomplete table: 4 of 10 planned runs finished"
               for c in claims)
    text = bc.format_claims(claims)
    assert "incomplete table: 4 of 10" in text and text.count("NOT MEASURED") == 2
    assert "cifar_resnet18: SD exit 4 88.00 ± 0.82 (n=3) vs baseline 85.33" in text
    assert "1.50x (paper 4.6x)" in text and "speed-up 1.40x wall" in text
    complete = bc.judge(_table(), ["cifar_resnet18"], None, planned=2, finished=2)
    assert complete[0]["numbers"]["table"] == "complete table"
    assert complete[4]["verdict"].startswith("not measured (")


def test_depth_comes_from_the_arch_name():
    assert [bc.depth_of(a) for a in ("cifar_resnet18", "cifar_vgg19_bn", "cifar_wrn20_8")] == [
        18, 19, 20]
    with pytest.raises(ValueError, match="cifar_mobilenet"):
        bc.depth_of("cifar_mobilenet")
