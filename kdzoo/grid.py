"""Hyper-parameter grids: expansion, one point by index, and the summary of finished points.

Each grid point runs in its own work directory ``<workdir>/point-NNN`` and
writes ``metrics.json`` there, so a cluster can run points in parallel
(``--grid_index``) and any process can summarise what has finished.
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
