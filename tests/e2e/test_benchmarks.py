"""Every benchmarks/*.py runs in its reduced ``--quick`` mode and ends with its JSON line.

One script at a time, each in its own subprocess (so TF state, mixed-precision
policies and memory do not leak between them). A script that crashes, hangs or
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

import pytest

pytestmark = pytest.mark.slow  # end-to-end: `make test-fast` skips this file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(p for p in glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
                 if not os.path.basename(p).startswith("_"))
TIMEOUT_S = 240  # each takes ~20-60 s on 2 shared CPU cores; the rest is slack


def test_the_benchmarks_are_found():
    names = {os.path.basename(p) for p in SCRIPTS}
    assert {"distill_step.py", "teacher_cache.py", "input_pipeline.py",
            "precision.py", "runner_overhead.py", "grid_cache.py",
            "paper_scale.py"} <= names, names


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_benchmark_quick_mode_prints_its_json_line(script):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, script, "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
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
