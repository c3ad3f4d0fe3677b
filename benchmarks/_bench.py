"""Shared helpers of the benchmark scripts (not a benchmark itself: tests skip ``_*.py``).

Every benchmark ends by printing ONE JSON line with at least ``benchmark``,
``ratio`` (its headline ratio, higher is better), ``goal``, ``goal_met``,
``peak_rss_mb`` and ``quick``. Figures are medians of repeated timed windows
taken after a warm-up; the methods compared are interleaved window by window
so that load from other processes on a shared machine hits them alike.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(doc, **extra):
    parser = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="reduced mode for CI (small sizes, few windows)")
    for name, kwargs in extra.items():
        parser.add_argument(f"--{name}", **kwargs)
    return parser.parse_args()


def peak_rss_mb():
    """Peak resident set size of this process in MiB (ru_maxrss is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0, 1)


def median(values):
    return float(statistics.median(values))


def interleaved(runners, windows, warmup=1):
    """Run each ``runners[name]()`` (returning items/s of one window) round-robin.

    ``warmup`` rounds are discarded; returns ``{name: [rates of the timed windows]}``.
    """
    rates = {name: [] for name in runners}
    for r in range(warmup + windows):
        for name, run in runners.items():
            rate = run()
            if r >= warmup:
                rates[name].append(rate)
    return rates


def timed(fn, items):
    """items/s of one call of ``fn()``."""
    start = time.perf_counter()
    fn()
    return items / (time.perf_counter() - start)


def timed_cpu(fn, items):
    """``(items/s, process CPU seconds / wall seconds)`` of one call of ``fn()``.

    The second figure says how much of the 2 cores the window used: a window that
    lost a core to another job shows it here rather than as a slow method.
    """
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    wall = time.perf_counter() - wall0
    return items / wall, (time.process_time() - cpu0) / wall


def emit(record):
    """Print the benchmark's one JSON line (last line of stdout)."""
    record = dict(record)
    record.setdefault("peak_rss_mb", peak_rss_mb())
    if "goal_met" not in record:
        record["goal_met"] = bool(record["ratio"] >= record["goal"])
    print(json.dumps(record, sort_keys=False), flush=True)
