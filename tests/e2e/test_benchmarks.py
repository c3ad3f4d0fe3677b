"""Every benchmarks/*.py runs in its reduced ``--quick`` mode and ends with its JSON line.

Each script in its own subprocess (so TF state, mixed-precision policies and memory
do not leak between them), three at a time: much of a quick run is single-threaded
tracing, and in quick mode only the JSON line is checked, not the timings. A script that crashes, hangs or
forgets its JSON line fails here, so CI never passes a benchmark that failed
silently. Helpers named ``_*.py`` are not benchmarks.
Run: python -m pytest tests/e2e/test_benchmarks.py -q
"""

import glob
import json
import math
import os
import subprocess
import sys
import types

import pytest

pytestmark = pytest.mark.slow  # end-to-end: `make test-fast` skips this file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(p for p in glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
                 if not os.path.basename(p).startswith("_"))
TIMEOUT_S = 400  # each takes ~20-60 s alone on 2 cores, up to 3x that 3 at a time


def test_the_benchmarks_are_found():
    names = {os.path.basename(p) for p in SCRIPTS}
    assert {"distill_step.py", "teacher_cache.py", "input_pipeline.py",
            "precision.py", "runner_overhead.py", "grid_cache.py",
            "paper_scale.py", "study_speed.py", "paper_scale_sweep.py"} <= names, names


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    """``script -> (exit code, stdout, stderr)`` of every ``--quick`` run, 3 at a time."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    pending, running, done = list(SCRIPTS), [], {}
    while pending or running:
        while pending and len(running) < 3:
            script = pending.pop(0)
            out = tmp_path_factory.mktemp(os.path.basename(script)[:-3])
            with open(out / "stdout", "w") as o, open(out / "stderr", "w") as e:  # no pipes
                proc = subprocess.Popen([sys.executable, script, "--quick"], cwd=ROOT, env=env,
                                        stdout=o, stderr=e, text=True)
            running.append((script, proc, out))
        script, proc, out = running.pop(0)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        done[script] = (proc.returncode, (out / "stdout").read_text(),
                        (out / "stderr").read_text())
    return done


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_benchmark_quick_mode_prints_its_json_line(script, quick_runs):
    returncode, stdout, stderr = quick_runs[script]
    proc = types.SimpleNamespace(returncode=returncode, stdout=stdout, stderr=stderr)
    tail = f"\n--- stdout ---\n{proc.stdout[-3000:]}\n--- stderr ---\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{script} exited with {proc.returncode}{tail}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed nothing{tail}"
    try:
        record = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"{script}: the last stdout line is not JSON: {lines[-1]!r}{tail}")
    assert isinstance(record, dict), record
    for key in ("ratio", "goal"):
        assert key in record, f"{script}: no {key!r} in {record}"
        value = record[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), record
        assert math.isfinite(value), record
    assert record["ratio"] > 0, record
    assert record.get("quick") is True, record


def _last_json(result):
    returncode, stdout, stderr = result
    assert returncode == 0, stderr[-3000:]
    return json.loads([line for line in stdout.splitlines() if line.strip()][-1])


def _positive_finite(value):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def test_study_speed_reports_a_ratio_and_a_matmul_fraction_per_config(quick_runs):
    """study_speed.py --quick: each config measured now and at the baseline commit."""
    record = _last_json(quick_runs[os.path.join(ROOT, "benchmarks", "study_speed.py")])
    assert record["benchmark"] == "study_speed", record
    ratios, fractions = record["ratio_by_config"], record["fraction_of_matmul"]
    assert ratios and set(ratios) == set(fractions), record
    for config, ratio in ratios.items():
        assert _positive_finite(ratio), (config, record)
        assert _positive_finite(fractions[config]) and fractions[config] < 10, (config, record)
        now, base = (record["images_per_s"][config][k] for k in ("now", "baseline"))
        assert _positive_finite(now) and _positive_finite(base), record
        assert abs(ratio - now / base) <= 0.01 * ratio, (config, record)
    assert _positive_finite(record["matmul"]["gflops"]), record
    assert record["baseline"] == "020116a", record


def test_paper_scale_reports_measured_matmul_fractions(quick_runs):
    """paper_scale.py --quick: fraction_of_matmul for both methods beside the estimate."""
    record = _last_json(quick_runs[os.path.join(ROOT, "benchmarks", "paper_scale.py")])
    fractions = record["fraction_of_matmul"]
    assert set(fractions) >= {"funmatch", "keras"}, record
    for name, value in fractions.items():
        assert _positive_finite(value), (name, record)
    for policy, rate in record["matmul_gflops"].items():
        assert _positive_finite(rate), (policy, record)


def test_paper_scale_sweep_reports_every_point_and_its_headline(quick_runs):
    """paper_scale_sweep.py --quick: one paper_scale.py process per point, its two lines
    summarised: each point's fraction and ratio, the best point, the headline ratio."""
    script = os.path.join(ROOT, "benchmarks", "paper_scale_sweep.py")
    returncode, stdout, stderr = quick_runs[script]
    points = [json.loads(x) for x in stdout.splitlines()
              if x.startswith('{"benchmark": "paper_scale_point"')]
    assert returncode == 0 and [p["batch"] for p in points] == [2, 4], stderr[-2000:]
    record = _last_json(quick_runs[script])
    assert record["failed"] == [] and set(record["by_point"]) == {
        "batch 2, xla off", "batch 4, xla off"}, record
    # The goal batch (16) is not in the quick sweep: the headline is the largest batch's.
    assert record["ratio_at"] == {"batch": 4, "xla": False} and not record["goal_met"]
    assert record["ratio"] == points[1]["ratio"], record
    assert record["best"]["fraction_of_matmul"]["funmatch"] == max(
        p["fraction_of_matmul"]["funmatch"] for p in points), record


def test_paper_scale_sweep_keeps_a_failed_point_and_judges_the_goal_batch():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import paper_scale_sweep as sweep

    def point(batch, policy, ratio, fraction):
        return {"batch": batch, "xla": False, "keras_precision": policy, "ratio": ratio,
                "fraction_of_matmul": {"funmatch": fraction, "keras": 0.1},
                "images_per_s": {"funmatch": 1.0, "keras": 1.0}, "device": "cpu",
                "cpu_bf16_flags": []}
    points = [point(2, "float32", 1.1, 0.2), point(16, "float32", 1.6, 0.45),
              point(16, "mixed_bfloat16", 1.05, 0.45),
              {"batch": 32, "xla": False, "keras_precision": "float32", "error": "exit -9: "}]
    record = sweep.summarise(points, goal_batch=16)
    assert record["ratio"] == 1.6 and record["goal_met"] and record["ratio_at"]["batch"] == 16
    assert record["by_point"]["batch 16, xla off"]["ratio_over_keras_mixed_bfloat16"] == 1.05
    assert [f["batch"] for f in record["failed"]] == [32]
    points[1]["fraction_of_matmul"]["funmatch"] = 0.3  # fast enough, but under 40 % of matmul
    assert not sweep.summarise(points, goal_batch=16)["goal_met"]
