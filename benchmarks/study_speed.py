"""Study speed: the Fashion-MNIST study's own runs, now vs a baseline commit, side by side.

Configurations (``benchmarks/_study_worker.py``: the study's settings of
``recipes/fashion_mnist.py``, batch 128, 28 px, inception crops of area 0.25-1,
built by kdzoo's own runner): ``labels``, ``fix/rs`` (the teacher's fixed targets
computed once, before the windows), ``same/ic``, ``funmatch`` (teacher
``fmnist_cnn_w32.kdzoo_teacher_full``, student ``fmnist_cnn_w16``),
``self_distillation`` of the student, and ``byot_resnet18``: the BYOT table's
CIFAR ResNet-18 (width 16) self-distilled at 32 px (pad-4 crop, fill 128, flip).

The baseline is the same configuration run by the code at ``--baseline REF``
(default ``020116a``): a ``git worktree add --detach`` of REF in a temp dir, put on
``PYTHONPATH`` of a second worker process. Both workers stay warm; their timed
windows alternate (now, baseline, now, baseline, ...) with a 2048^2 matmul window
in this process between them, so load from other jobs on a shared machine hits all
three alike. Per configuration: images/s (median of the timed windows), analytic
GFLOPs per training image (``kdzoo.distill.self_distill.early_exit.count_flops``: forward of the
trained network x 3 for forward + backward, plus the teacher's forward where it runs
in the step), ``fraction_of_matmul`` (model GFLOP/s / the matmul's, float32, the
study's policy), CPU utilisation (worker process CPU seconds / wall seconds, of
2 cores), and the first window's seconds (tracing). The last JSON line carries
``ratio_by_config`` (images/s now / at the baseline) and ``fraction_of_matmul``.

    python benchmarks/study_speed.py                       # all configs, ~10 min on 2 cores
    python benchmarks/study_speed.py --configs funmatch,same/ic --windows 5
    python benchmarks/study_speed.py --quick               # CI: labels only, < 60 s
"""

import _bench
import _peak

import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from _study_worker import CONFIGS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "benchmarks", "_study_worker.py")
START = time.perf_counter()
GOALS = {"funmatch": 2.0, "same/ic": 2.0, "byot_resnet18": 2.0}  # issue 23


class Worker:
    """A warm ``_study_worker.py`` process over one tree; ``window(k)`` -> its JSON reply."""

    def __init__(self, config, tree):
        env = dict(os.environ, PYTHONPATH=tree, TF_CPP_MIN_LOG_LEVEL="2",
                   PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, WORKER, config], cwd=tree, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.tree, self.config = tree, config

    def _reply(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"study worker ({self.config}, tree {self.tree}) exited with "
                           f"{self.proc.wait()}; its stderr above says why.")

    def ready(self):
        return self._reply()

    def window(self, steps):
        self.proc.stdin.write(f"window {steps}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            self.proc.wait(timeout=60)


def baseline_tree(ref, where):
    """A detached git worktree of ``ref`` at ``where`` (removed by :func:`remove_tree`)."""
    try:
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", where, ref],
                       check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as e:
        sys.exit(f"study_speed.py --baseline {ref}: git worktree add failed: "
                 f"{e.stderr.strip()}. Pass a commit this repository has.")
    return where


def remove_tree(where):
    subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", where],
                   capture_output=True, text=True)


def train_gflops(config):
    """Analytic GFLOPs per training image of ``config`` (current tree's models)."""
    from kdzoo import load
    from kdzoo.distill.self_distill.early_exit import count_flops
    from _study_worker import STUDY, _resnet18
    if config == "byot_resnet18":
        from kdzoo.distill.self_distill import SelfDistillation
        return 3 * count_flops(SelfDistillation(_resnet18(), num_classes=10).network) / 1e9
    student = load(STUDY["student"], weights=None)
    if config == "self_distillation":
        from kdzoo.distill.self_distill import SelfDistillation
        return 3 * count_flops(SelfDistillation(student, num_classes=10).network) / 1e9
    teacher = count_flops(load(STUDY["teacher"], weights=None)) if config in (
        "same/ic", "funmatch") else 0
    return (3 * count_flops(student) + teacher) / 1e9


def one_config(config, trees, args, matmul):
    workers = {side: Worker(config, tree) for side, tree in trees.items()}
    try:
        setup = {side: w.ready() for side, w in workers.items()}
        first = {side: w.window(args.warmup_steps) for side, w in workers.items()}  # traces
        windows = {side: [] for side in workers}
        for _ in range(args.windows):
            for side, w in workers.items():
                windows[side].append(w.window(args.steps))
                matmul()
    finally:
        for w in workers.values():
            w.close()
    gflops = train_gflops(config)
    rate = {s: _bench.median([w["images_per_s"] for w in v]) for s, v in windows.items()}
    mm = matmul.summary()
    return {
        "config": config, "gflops_per_image": round(gflops, 5),
        "images_per_s": {s: round(v, 1) for s, v in rate.items()},
        "window_images_per_s": {s: [round(w["images_per_s"], 1) for w in v]
                                for s, v in windows.items()},
        "cpu_over_wall": {s: _bench.median([w["cpu_over_wall"] for w in v])
                          for s, v in windows.items()},
        "gflops_per_s": {s: round(v * gflops, 2) for s, v in rate.items()},
        "fraction_of_matmul": {s: _peak.fraction_of_matmul(v * gflops, mm)
                               for s, v in rate.items()},
        "ratio": round(rate["now"] / rate["baseline"], 3),
        "first_window_s": {s: v["wall_s"] for s, v in first.items()},
        "setup_s": {s: v["setup_s"] for s, v in setup.items()},
    }


def main():
    args = _bench.parse_args(
        __doc__,
        baseline=dict(default="020116a", help="git ref to compare with (default 020116a)"),
        configs=dict(default=None, help=f"comma list of {', '.join(CONFIGS)}"),
        windows=dict(type=int, default=None, help="timed windows per side (default 3)"),
        steps=dict(type=int, default=None, help="steps per timed window (default 24)"),
        warmup_steps=dict(type=int, default=None, help="steps of the first (tracing) window"))
    quick = args.quick
    configs = args.configs.split(",") if args.configs else (
        ["labels"] if quick else list(CONFIGS))
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        sys.exit(f"study_speed.py --configs: unknown {unknown}; choose from {CONFIGS}.")
    args.windows = args.windows or (1 if quick else 3)
    args.steps = args.steps or (2 if quick else 24)
    args.warmup_steps = args.warmup_steps or (1 if quick else 8)
    matmul = _peak.MatmulWindow("float32", 2048, seconds=0.3 if quick else 1.0)
    records = {}
    with tempfile.TemporaryDirectory(prefix="study_speed_base_") as tmp:
        trees = {"now": ROOT, "baseline": baseline_tree(args.baseline, os.path.join(tmp, "b"))}
        try:
            for config in configs:
                record = one_config(config, trees, args, matmul)
                records[config] = record
                print(json.dumps({"benchmark": "study_speed_config", **record}), flush=True)
        finally:
            remove_tree(trees["baseline"])
    ratios = {c: r["ratio"] for c, r in records.items()}
    fractions = {c: r["fraction_of_matmul"]["now"] for c, r in records.items()}
    met = {c: bool(ratios[c] >= g or (fractions[c] or 0) >= 0.5)
           for c, g in GOALS.items() if c in ratios}
    _bench.emit({
        "benchmark": "study_speed",
        "ratio": round(math.exp(sum(math.log(v) for v in ratios.values()) / len(ratios)), 3),
        "goal": 2.0, "goal_met": bool(met) and all(met.values()), "goals_met": met,
        "ratio_by_config": ratios, "fraction_of_matmul": fractions,
        "fraction_of_matmul_baseline": {c: r["fraction_of_matmul"]["baseline"]
                                        for c, r in records.items()},
        "images_per_s": {c: r["images_per_s"] for c, r in records.items()},
        "cpu_over_wall": {c: r["cpu_over_wall"] for c, r in records.items()},
        "gflops_per_image": {c: r["gflops_per_image"] for c, r in records.items()},
        "matmul": matmul.summary(), "baseline": args.baseline,
        "steps_per_window": args.steps, "windows": args.windows,
        "what": "ratio: geometric mean over configs of images/s now / at the baseline "
                "(steady-state train steps of the study's runs, alternating windows)",
        "quick": quick, "wall_s": round(time.perf_counter() - START, 1),
    })


if __name__ == "__main__":
    main()
