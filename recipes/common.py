"""Flags and glue shared by every recipe (library code never parses flags; recipes do).

Common flags, same names everywhere: --workdir --data_dir --strategy --epochs
--batch_size --grid_index --smoke --seed --dry_run, the checkpoint flags
(--log_every_steps --checkpoint_every_steps --checkpoint_every_minutes
--keep_checkpoints), plus --preset, --grid, --variant, --mixed_precision, --xla,
--teacher, --student, --student_init, --distill_dataset. Each recipe adopts
these as its own key flags, so ``--help`` lists them.
"""

import sys

from absl import flags


FLAGS = flags.FLAGS


# The common flags as data: (kind, name, default, help[, enum values]).
COMMON_FLAGS = (
    ("string", "workdir", None, "Work directory: checkpoints, TensorBoard logs, metrics.json. "
     "Rerunning with the same workdir resumes."),
    ("string", "data_dir", None, "TFDS data_dir (default: TFDS's own, ~/tensorflow_datasets)."),
    ("enum", "strategy", "auto", "tf.distribute strategy; auto = TPU, else multi-worker if "
     "TF_CONFIG is set, else mirrored over the GPUs, else default.",
     ["auto", "default", "one_device", "mirrored", "multi_worker", "tpu"]),
    ("integer", "epochs", None, "Epochs (default: the preset's)."),
    ("integer", "batch_size", None, "Global batch size, split over replicas (default: the "
     "paper's)."),
    ("integer", "grid_index", None, "Run only this point of the hyper-parameter grid (implies "
     "--grid); default: all points, one after another."),
    ("bool", "grid", False, "Sweep the paper's grid instead of the preset's values; pick the "
     "best point on minival and print a summary table."),
    ("bool", "smoke", False, "Run the whole path (data, strategy, a few steps, checkpoint, "
     "metrics) on tfds.testing.mock_data with tiny models, offline, in seconds."),
    ("integer", "seed", 0, "Seed of data order, augmentation and init."),
    ("enum", "mixed_precision", "auto", "Keras dtype policy; auto: mixed_bfloat16 where the "
     "hardware has native bf16 (GPU compute capability >= 8, TPU, CPU avx512_bf16/amx_bf16), "
     "else float32 (kdzoo.train.precision).", ["auto", "float32", "mixed_bfloat16", "mixed_float16"]),
    ("bool", "deterministic", False, "Deterministic TF ops (slower): a resumed run then ends "
     "bit-identical to an uninterrupted one."),
    ("bool", "xla", False, "Compile the train step with XLA (jit_compile=True)."),
    ("bool", "dry_run", False, "Print the plan (steps, warm-up, batch, eval, models, "
     "checkpoints) as one JSON line and exit: no data, no network."),
    ("integer", "log_every_steps", None, "Steps per Keras epoch: one progress line, "
     "TensorBoard point and checkpoint check (default 500; 2 in --smoke)."),
    ("integer", "checkpoint_every_steps", None, "Write a checkpoint (student + optimizer) "
     "every this many steps (default 5000; 2 in --smoke)."),
    ("float", "checkpoint_every_minutes", 30.0, "Also write one when this many minutes "
     "passed since the last (checked every --log_every_steps)."),
    ("integer", "keep_checkpoints", 3, "Keep the newest N checkpoints."),
    ("bool", "overwrite", False, "Delete what --workdir holds (a run with other settings) and "
     "start over; without it, a workdir whose recorded settings differ is refused "
     "(kdzoo.train.run_dir)."),
)
POSITIVE = {  # flag -> the message when it is not a positive integer
    "log_every_steps": "--log_every_steps must be a positive integer.",
    "checkpoint_every_steps": "--checkpoint_every_steps must be a positive integer.",
    "keep_checkpoints": "--keep_checkpoints must be a positive integer.",
    "batch_size": "--batch_size must be a positive integer (the global batch, a multiple of "
                  "the number of replicas), e.g. --batch_size=512.",
    "epochs": "--epochs must be a positive integer, e.g. --epochs=10.",
}


def define_flags(table, **defaults):
    """absl flags from a table of (kind, name, default, help[, enum values])."""
    for kind, name, default, help_text, *values in table:
        default = defaults.get(name, default)
        define = getattr(flags, f"DEFINE_{kind}")
        define(name, default, *values, help_text) if values else define(name, default, help_text)


def define_common_flags(default_workdir, presets=None, default_preset=None):
    define_flags(COMMON_FLAGS, workdir=default_workdir)
    for name, message in POSITIVE.items():
        flags.register_validator(name, lambda v: v is None or v >= 1, message=message)
    if presets:
        flags.DEFINE_enum("preset", default_preset, sorted(presets),
                          "The paper's schedule and hyper-parameters: "
                          + "; ".join(f"{k}: {v}" for k, v in presets.items()))


def fail(message):
    """One clear message on stderr and a non-zero exit: no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def guarded(main):
    """``main`` with the errors a user can fix turned into :func:`fail` messages."""
    def run(argv):
        from kdzoo.errors import user_message
        try:
            return main(argv)
        except Exception as e:  # noqa: BLE001  (re-raised unless the user can fix it)
            message = user_message(e)
            if message is None:
                raise
            fail(message)
    return run


def run_flags(smoke):
    """The step / checkpoint fields of a run, from the flags (:func:`kdzoo.train.recipe.run_flags`)."""
    from kdzoo.train import recipe
    return recipe.run_flags(FLAGS, smoke)


def dry_run(run, **names):
    """Print a run's plan as one JSON line (``kdzoo.train.plan``)."""
    from kdzoo.train import recipe
    recipe.print_plan(run, **names)


def funmatch_app(recipe):
    """The ``main`` of a FunMatch recipe file: its config run with the flags."""
    def main(argv):
        from kdzoo.train.recipe import run_funmatch_recipe
        del argv
        run_funmatch_recipe(recipe, FLAGS)
    return guarded(main)


FUNMATCH_FLAGS = (
    ("string", "teacher", None, "Zoo name of the teacher (default: the paper's teacher for "
     "this dataset), or the path of a local copy of its weights (.npz / .weights.h5 / "
     ".keras) when there is no network."),
    ("integer", "teacher_image_size", None, "Teacher resolution of the same crop (e.g. 384 "
     "with a 224 student); default: the student's."),
    ("string", "student", "bit_r50x1", "Zoo architecture of the student, e.g. bit_r50x1 or "
     "mobilenet_v3_large (another family)."),
    ("string", "student_init", None, "Student init: empty for scratch (default), "
     "'pretrained' or a checkpoint path (.npz / .weights.h5)."),
    ("string", "distill_dataset", None, "Distill on this dataset's train images "
     "(out-of-domain study) and evaluate on the recipe's own dataset."),
    ("bool", "grid_cache", True, "--grid: run the teacher once, into <workdir>/teacher.tcache, "
     "and train every point from it (lr, weight decay and T leave the teacher's views "
     "unchanged); --nogrid_cache runs the teacher online in every point."),
)


def define_funmatch_flags(student_default="bit_r50x1"):
    from kdzoo.train import grid as grids
    from kdzoo.distill import VARIANTS
    points = len(grids.expand_grid(grids.FUNMATCH_GRID))
    flags.register_validator(
        "grid_index", lambda v: v is None or 0 <= v < points,
        message=f"--grid_index must be in [0, {points - 1}]: the paper's FunMatch grid "
                f"has {points} points (lr x weight_decay x temperature).")
    flags.DEFINE_enum("variant", "funmatch", list(VARIANTS),
                      "Teaching variant (Beyer et al. 2022, sec. 3).")
    define_flags(FUNMATCH_FLAGS, student=student_default)
