"""Hyper-parameter grids: expansion, one point by index, and the summary of finished points.

Each grid point runs in its own work directory ``<workdir>/point-NNN`` and
writes ``metrics.json`` there, so a cluster can run points in parallel
(``--grid_index``) and any process can summarise what has finished.

The grid pays for the teacher once: learning rate, weight decay, temperature
and the number of epochs (:data:`TEACHER_FREE`) do not change a single view
the teacher sees (views are keyed by ``(seed, epoch, index)``, mixup by
``(seed, epoch, step)``, and a shorter run's stream is a prefix of a longer
one's), and the teacher-output cache stores logits with the temperature
applied when read. So one cache, built for the longest point, serves every
point of the grid: :func:`fit_grid_from_one_cache`. On one machine the points
can also train in lockstep (:func:`fit_grid_lockstep`): one view stream and one
teacher pass per step for a whole group of points. Both are measured by
``benchmarks/grid_cache.py``.
"""

import itertools
import json
import os

# The paper's FunMatch grid (Beyer et al. 2022, appendix): 4 x 5 x 4 = 80 points.
FUNMATCH_GRID = {
    "lr": (3e-4, 1e-3, 3e-3, 1e-2),
    "weight_decay": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3),
    "temperature": (1.0, 2.0, 5.0, 10.0),
}

# The authors' published sweep: big_vision configs/proj/distill/bigsweep_food_sun.py,
# get_hyper (the full product after its early return): total_epochs x lr x T x wd, times
# 8 preprocessing settings (mixup p in {0, .1, .5, 1} x two crop pipelines) not swept here.
AUTHORS_SWEEP = {
    "epochs": (100, 1000, 3000),
    "lr": (1e-3, 3e-3, 1e-2),
    "temperature": (1.0, 2.0, 5.0, 10.0),
    "weight_decay": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3),
}

# Point parameters that leave every teacher view unchanged: points differing only in
# these can share one teacher-output cache.
TEACHER_FREE = ("lr", "weight_decay", "temperature", "epochs")


def with_epochs(grid, epochs):
    """``grid`` with an ``epochs`` axis, outermost as in the authors' ``get_hyper``.

    ``with_epochs(FUNMATCH_GRID, (1000, 3000, 10000))`` is 240 points.
    """
    epochs = tuple(epochs)
    if not epochs or any(isinstance(e, bool) or not isinstance(e, int) or e < 1
                         for e in epochs):
        raise ValueError(f"epochs must be a non-empty list of positive ints, got {epochs!r}.")
    if "epochs" in grid:
        raise ValueError("The grid already has an 'epochs' axis.")
    return {"epochs": epochs, **grid}


def teacher_cache_groups(points):
    """Points that can share one teacher cache: ``[(shared_params, [indices])]``.

    Points are grouped by their parameters outside :data:`TEACHER_FREE` (a
    grid over lr x wd x T x epochs is one group); order follows ``points``.
    """
    groups = {}
    for index, point in enumerate(points):
        shared = tuple(sorted((k, v) for k, v in point.items() if k not in TEACHER_FREE))
        groups.setdefault(shared, []).append(index)
    return [(dict(shared), indices) for shared, indices in groups.items()]


def fit_grid_from_one_cache(make_distiller, images, points, cache_path, *, batch_size,
                            epochs=None, top_k=None, dtype="float16", fit_point=None):
    """Train every grid point from one teacher-output cache; the teacher runs once.

    Args:
        make_distiller: ``point -> FunMatchDistiller``, compiled with the point's
            optimizer (lr, weight decay) and built with its temperature. All
            points must share the views (:func:`teacher_cache_groups` gives one
            group), which ``use_teacher_cache`` checks.
        images: the train images, as given to ``fit``.
        points: the grid points (dicts); a point's ``"epochs"`` (else ``epochs``)
            is its length.
        cache_path: where the cache is written (once, for the longest point).
        batch_size, top_k, dtype: as in :func:`kdzoo.distill.cache_teacher`.
        fit_point: ``(distiller, point, epochs) -> result``; default
            ``distiller.fit(images, batch_size=..., epochs=..., verbose=0)``.

    Returns ``[result of each point]``, in order.
    """
    from kdzoo.distill.funmatch.cache_writer import cache_teacher

    points, lengths = _checked_points(points, epochs, "fit_grid_from_one_cache")
    distiller = make_distiller(points[0])
    cache = cache_teacher(distiller, images, cache_path, epochs=max(lengths),
                          batch_size=batch_size, top_k=top_k, dtype=dtype)
    if fit_point is None:
        def fit_point(d, point, n):
            return d.fit(images, batch_size=batch_size, epochs=n, verbose=0)
    results = []
    for i, (point, n) in enumerate(zip(points, lengths)):
        d = distiller if i == 0 else make_distiller(point)
        d.use_teacher_cache(cache)
        results.append(fit_point(d, point, n))
    return results


def fit_grid_lockstep(make_distiller, images, points, *, batch_size, epochs=None,
                      group_size=None, verbose=0):
    """Train grid points in lockstep groups: per step one view batch, one teacher pass.

    Points of equal length (``"epochs"`` entry, else ``epochs``) train together in a
    :class:`kdzoo.distill.funmatch.lockstep.LockstepGrid`, at most ``group_size`` at a time
    (memory holds every student of a group and its optimizer state). Each point
    trains exactly as its own ``fit`` would. ``make_distiller`` as in
    :func:`fit_grid_from_one_cache` (no teacher cache: the teacher runs online,
    once per step for the whole group). Returns the points' distillers, in order.
    """
    from kdzoo.distill.funmatch.lockstep import LockstepGrid

    points, lengths = _checked_points(points, epochs, "fit_grid_lockstep")
    if group_size is not None and (isinstance(group_size, bool) or
                                   not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}.")
    trained = [None] * len(points)
    for n in sorted(set(lengths)):
        same = [i for i, e in enumerate(lengths) if e == n]
        size = group_size or len(same)
        for start in range(0, len(same), size):
            group = same[start:start + size]
            distillers = [make_distiller(points[i]) for i in group]
            lockstep = LockstepGrid(distillers)
            lockstep.compile()
            lockstep.fit(images, batch_size=batch_size, epochs=n, verbose=verbose)
            for i, d in zip(group, distillers):
                trained[i] = d
    return trained


def _checked_points(points, epochs, where):
    """``(points, lengths)``: one cache group, each point's number of epochs known."""
    points = list(points)
    if not points:
        raise ValueError(f"{where} needs at least one grid point.")
    groups = teacher_cache_groups(points)
    if len(groups) > 1:
        keys = sorted({k for params, _ in groups for k in params})
        raise ValueError(f"The points differ in {keys}, which change the teacher's views; "
                         "one teacher pass cannot serve them. Give each group of "
                         "kdzoo.train.grid.teacher_cache_groups(points) its own run.")
    lengths = [point.get("epochs", epochs) for point in points]
    if any(e is None for e in lengths):
        raise ValueError("Each point needs its number of epochs: an 'epochs' entry or "
                         "epochs=.")
    return points, lengths


def expand_grid(grid):
    """Every combination, in a stable order (the last key varies fastest)."""
    if not grid:
        return [{}]
    keys = list(grid)
    for key in keys:
        if not isinstance(grid[key], (list, tuple)) or not grid[key]:
            raise ValueError(f"Grid entry {key!r} must be a non-empty list of values.")
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def grid_point(grid, index):
    points = expand_grid(grid)
    if not isinstance(index, int) or not 0 <= index < len(points):
        raise IndexError(f"grid_index must be an int in [0, {len(points) - 1}] for this "
                         f"{len(points)}-point grid; got {index!r}.")
    return points[index]


def point_dir(workdir, index):
    return os.path.join(workdir, f"point-{index:03d}")


def finished_points(workdir):
    """``[(index, metrics)]`` of every point under ``workdir`` with a metrics.json."""
    rows = []
    if not os.path.isdir(workdir):
        return rows
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name, "metrics.json")
        if name.startswith("point-") and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                rows.append((int(name.split("-")[1]), json.load(f)))
    return rows


def best_point(rows, metric="accuracy", split="minival"):
    """The finished point with the highest ``split`` ``metric`` (ties: lowest index)."""
    if not rows:
        raise ValueError("No grid point has finished yet (no point-*/metrics.json).")
    return max(rows, key=lambda row: (row[1][split][metric], -row[0]))


def summary_table(rows, keys=("lr", "weight_decay", "temperature"), metric="accuracy"):
    """A Markdown table of finished points, best minival first marked with *."""
    if not rows:
        return "(no finished grid points)\n"
    best = best_point(rows, metric)[0]
    header = "| point | " + " | ".join(keys) + f" | minival {metric} | test {metric} |"
    lines = [header, "|" + "---|" * (len(keys) + 3)]
    for index, m in sorted(rows, key=lambda r: -r[1]["minival"][metric]):
        params = " | ".join(f"{m['params'].get(k, '')}" for k in keys)
        test = m.get("test", {}).get(metric)
        test = "—" if test is None else f"{100 * test:.2f}"
        mark = "*" if index == best else ""
        lines.append(f"| {index}{mark} | {params} | {100 * m['minival'][metric]:.2f} | {test} |")
    return "\n".join(lines) + "\n"
