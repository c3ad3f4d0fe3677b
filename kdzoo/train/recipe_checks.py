"""A recipe's model flags checked against the zoo, and what ``--dry_run`` / ``--smoke`` say.

Why before anything runs: a typo in ``--student`` used to surface only after the
data check, or never under ``--dry_run`` (whose plan printed the typo back as if
it were fine), and ``--smoke`` replaced an explicit ``--student`` silently. Here
the flags are checked by name (did-you-mean, :func:`kdzoo.zoo.suggest.did_you_mean`)
and the recipe fails with a :class:`kdzoo.errors.RecipeError` naming the flag,
which the recipes print as one line and exit with status 2.
"""

import os
import sys

from kdzoo.errors import RecipeError

__all__ = ["check_model_flag", "dry_run_params", "smoke_substitution"]


def _is_path(value):
    return os.sep in value or value.endswith((".npz", ".h5", ".keras"))


def check_model_flag(flag, value, *, needs_weights=False):
    """``--<flag>=value`` must be a zoo name (a path is left to the loader); with
    ``needs_weights`` one that comes with published weights."""
    from kdzoo.zoo import registry
    from kdzoo.zoo.suggest import did_you_mean
    if value is None or _is_path(value):
        return
    if value not in registry.all_names():
        raise RecipeError(
            f"--{flag}={value}: not a zoo model name.{did_you_mean(value, registry.all_names())}"
            " `kdzoo list` (or kdzoo.list_models()) lists every name.")
    if needs_weights and not registry.has_weights(value):
        options = registry.model_info(value).get("checkpoints") or \
            registry.list_models(pretrained=True)
        raise RecipeError(
            f"--{flag}={value}: this architecture has no published weights, so it cannot be "
            f"loaded pretrained. Pass one of its checkpoints, e.g. {options[:3]}, or the path "
            "of a weights file.")


def dry_run_params(base, options, grid):
    """The hyper-parameters a run (or a grid point) trains with, for ``--dry_run``:
    lr, weight decay, temperature, batch, epochs, and which grid point they come from."""
    from kdzoo.train import grid as grids
    params = {k: base[k] for k in ("lr", "weight_decay", "temperature", "batch_size", "epochs")}
    if options.grid_index is not None:
        params.update(grids.grid_point(grid, options.grid_index),
                      grid_index=options.grid_index)
    elif options.grid:
        params.update({k: list(v) for k, v in grid.items()},
                      grid_points=len(grids.expand_grid(grid)))
    return params


def smoke_substitution(recipe, options):
    """One line on stderr: what ``--smoke`` trains instead of the recipe's models."""
    teacher = options.teacher or f"{recipe.teacher} (the recipe's)"
    student = options.student if options.student == recipe.student else \
        f"{options.student} (from --student)"
    if options.teacher:
        teacher += " (from --teacher)"
    print(f"--smoke: tiny BiT teacher and student on tfds.testing.mock_data instead of "
          f"teacher {teacher} and student {student}.", file=sys.stderr, flush=True)
