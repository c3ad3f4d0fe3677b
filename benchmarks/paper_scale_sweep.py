"""Paper scale, swept: ``paper_scale.py`` over batch x XLA x the Keras Distiller's precision.

Why a sweep: at batch 2 (``paper_scale.py``'s CPU default) a BiT-R152x2 step is
too small to fill the matmul units, and a single FunMatch / Keras ratio mixes two
effects, kdzoo's bf16 default and everything else. Each point of this sweep is a
fresh ``paper_scale.py`` process (own memory, own tracing; a batch that does not
fit ends its process and is recorded as failed, not as a crash of the sweep)
that alternates FunMatch (kdzoo defaults, ``--precision auto``) and Keras'
``Distiller`` window by window, with the measured 2048^2 matmul in both policies
between them. Keras runs at its float32 default *and* at ``mixed_bfloat16``:
FunMatch / Keras-bf16 is the gain that is more than precision.

Prints one JSON line per point (``paper_scale_point``) and a last line with, per
point, FunMatch's ``fraction_of_matmul`` and both ratios; ``best`` (the point where
FunMatch's fraction of the bf16-or-float32 matmul is highest); and ``ratio``: FunMatch
/ Keras float32 at ``--goal_batch`` (issue goal 1.5, with FunMatch >= 40 % of its
matmul there), else at the largest batch that ran.

    nice python benchmarks/paper_scale_sweep.py                   # 2,8,16,32 x XLA off/on
    python benchmarks/paper_scale_sweep.py --batches 16 --xla off  # one column
    python benchmarks/paper_scale_sweep.py --quick                 # CI: tiny BiTs, 2 points
"""

import _bench

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GOAL_RATIO, GOAL_FRACTION = 1.5, 0.40  # issue 23, at batch 16 on a bf16-native CPU


def _csv(text, cast=str):
    return [cast(v) for v in text.split(",") if v]


def run_point(batch, xla, keras_precision, args):
    """One ``paper_scale.py`` process; its summary line, or ``{"error": ...}``."""
    cmd = [sys.executable, os.path.join(HERE, "paper_scale.py"), "--batch", str(batch),
           "--shapes", args.shape, "--keras_precision", keras_precision, "--no_checkpoints"]
    cmd += ["--xla"] if xla else []
    cmd += ["--quick"] if args.quick else []
    cmd += ["--steps", str(args.steps)] if args.steps else []
    cmd += ["--windows", str(args.windows)] if args.windows else []
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.point_timeout_s)
    point = {"batch": batch, "xla": xla, "keras_precision": keras_precision,
             "wall_s": round(time.perf_counter() - start, 1), "command": " ".join(cmd[1:])}
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return dict(point, error=f"exit {proc.returncode}: {' | '.join(tail)}")
    record = json.loads(lines[-1])
    return dict(point, images_per_s=record["images_per_s_by_shape"][args.shape],
                ratio=record["ratio"], fraction_of_matmul=record["fraction_of_matmul"],
                matmul_gflops=record["matmul_gflops"], funmatch_policy=record["funmatch_policy"],
                keras_policy=record["keras_policy"], device=record["device"],
                cpu_bf16_flags=record["cpu_bf16_flags"])


def summarise(points, goal_batch):
    """The sweep's last line from its points (failed points kept, marked)."""
    ok = [p for p in points if "error" not in p]
    table = {}
    for p in ok:
        cell = table.setdefault(f"batch {p['batch']}, xla {'on' if p['xla'] else 'off'}", {})
        cell["funmatch_fraction_of_matmul"] = p["fraction_of_matmul"]["funmatch"]
        cell[f"ratio_over_keras_{p['keras_precision']}"] = p["ratio"]
        cell[f"keras_{p['keras_precision']}_fraction_of_matmul"] = p["fraction_of_matmul"]["keras"]
    best = max(ok, key=lambda p: p["fraction_of_matmul"]["funmatch"], default=None)
    f32 = [p for p in ok if p["keras_precision"] == "float32"]
    at = [p for p in f32 if p["batch"] == goal_batch] or sorted(f32, key=lambda p: p["batch"])[-1:]
    head = max(at, key=lambda p: p["ratio"], default=None)
    return {
        "benchmark": "paper_scale_sweep",
        "ratio": head["ratio"] if head else 0.0,
        "ratio_at": head and {"batch": head["batch"], "xla": head["xla"]},
        "goal": GOAL_RATIO,
        "goal_met": bool(head and head["batch"] == goal_batch and head["ratio"] >= GOAL_RATIO
                         and head["fraction_of_matmul"]["funmatch"] >= GOAL_FRACTION),
        "goal_fraction_of_matmul": GOAL_FRACTION,
        "fraction_of_matmul": {"funmatch": head["fraction_of_matmul"]["funmatch"],
                               "keras": head["fraction_of_matmul"]["keras"]} if head else None,
        "best": best and {k: best[k] for k in ("batch", "xla", "fraction_of_matmul",
                                               "images_per_s")},
        "by_point": table,
        "failed": [{k: p[k] for k in ("batch", "xla", "keras_precision", "error")}
                   for p in points if "error" in p],
        "device": ok[0]["device"] if ok else None,
        "cpu_bf16_flags": ok[0]["cpu_bf16_flags"] if ok else None,
    }


def main():
    args = _bench.parse_args(
        __doc__,
        batches=dict(default=None, help="comma list (default 2,8,16,32; quick 2,4)"),
        xla=dict(default=None, help="comma list of off,on (default both; quick off)"),
        keras_precisions=dict(default="float32,mixed_bfloat16",
                              help="keras Distiller policies to compare against"),
        shape=dict(default=None, help="student/teacher px (default 128/128; quick 32/48)"),
        goal_batch=dict(type=int, default=16, help="batch of the headline ratio"),
        steps=dict(type=int, default=None, help="steps per timed window (paper_scale's)"),
        windows=dict(type=int, default=None, help="timed windows (paper_scale's)"),
        point_timeout_s=dict(type=int, default=3600, help="seconds before a point is failed"))
    args.shape = args.shape or ("32/48" if args.quick else "128/128")
    batches = _csv(args.batches or ("2,4" if args.quick else "2,8,16,32"), int)
    xla_modes = _csv(args.xla or ("off" if args.quick else "off,on"))
    if bad := sorted(set(xla_modes) - {"off", "on"}):
        sys.exit(f"--xla takes a comma list of off,on; got {bad}.")
    precisions = _csv(args.keras_precisions)
    if args.quick:
        precisions = precisions[:1]  # CI checks the lines, not the figures
    points = []
    for batch in batches:
        for xla in xla_modes:
            for policy in precisions:
                point = run_point(batch, xla == "on", policy, args)
                print(json.dumps({"benchmark": "paper_scale_point", **point}), flush=True)
                points.append(point)
    _bench.emit(dict(summarise(points, args.goal_batch), quick=args.quick,
                     batches=batches, xla_modes=xla_modes, keras_precisions=precisions,
                     shape=args.shape))


if __name__ == "__main__":
    main()
