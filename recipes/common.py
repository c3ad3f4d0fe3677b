"""Flags and glue shared by every recipe (library code never parses flags; recipes do).

Common flags, same names everywhere: --workdir --data_dir --strategy --epochs
--batch_size --grid_index --smoke --seed --dry_run, the checkpoint flags
(--log_every_steps --checkpoint_every_steps --checkpoint_every_minutes
--keep_checkpoints), plus --preset, --grid, --variant, --mixed_precision, --xla,
--teacher, --student, --student_init, --distill_dataset. Each recipe adopts
these as its own key flags, so ``--help`` lists them.
"""

import contextlib
import functools
import json
import os
import sys

from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

FLAGS = flags.FLAGS
SMOKE_EXAMPLES = 8  # per split under --smoke: two steps of batch 4
SMOKE_STEPS = 2     # under --smoke a log / checkpoint interval is one pass over the data


def define_common_flags(default_workdir, presets=None, default_preset=None):
    flags.DEFINE_string("workdir", default_workdir, "Work directory: checkpoints, TensorBoard "
                        "logs, metrics.json. Rerunning with the same workdir resumes.")
    flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: TFDS's own, ~/tensorflow_datasets).")
    flags.DEFINE_enum("strategy", "auto", ["auto", "default", "one_device", "mirrored",
                                           "multi_worker", "tpu"],
                      "tf.distribute strategy; auto = TPU, else multi-worker if TF_CONFIG "
                      "is set, else mirrored over the GPUs, else default.")
    flags.DEFINE_integer("epochs", None, "Epochs (default: the preset's).")
    flags.DEFINE_integer("batch_size", None, "Global batch size, split over replicas "
                         "(default: the paper's).")
    flags.DEFINE_integer("grid_index", None, "Run only this point of the hyper-parameter grid "
                         "(implies --grid); default: all points, one after another.")
    flags.DEFINE_bool("grid", False, "Sweep the paper's grid instead of the preset's values; "
                      "pick the best point on minival and print a summary table.")
    flags.DEFINE_bool("smoke", False, "Run the whole path (data, strategy, a few steps, "
                      "checkpoint, metrics) on tfds.testing.mock_data with tiny models, "
                      "offline, in seconds.")
    flags.DEFINE_integer("seed", 0, "Seed of data order, augmentation and init.")
    flags.DEFINE_enum("mixed_precision", "auto",
                      ["auto", "float32", "mixed_bfloat16", "mixed_float16"],
                      "Keras dtype policy; auto: mixed_bfloat16 where the hardware has native "
                      "bf16 (GPU compute capability >= 8, TPU, CPU avx512_bf16/amx_bf16), "
                      "else float32 (kdzoo.precision).")
    flags.DEFINE_bool("deterministic", False, "Deterministic TF ops (slower): a resumed run "
                      "then ends bit-identical to an uninterrupted one.")
    flags.DEFINE_bool("xla", False, "Compile the train step with XLA (jit_compile=True).")
    flags.DEFINE_bool("dry_run", False, "Print the plan (steps, warm-up, batch, eval, models, "
                      "checkpoints) as one JSON line and exit: no data, no network.")
    flags.DEFINE_integer("log_every_steps", None, "Steps per Keras epoch: one progress line, "
                         "TensorBoard point and checkpoint check (default 500; 2 in --smoke).")
    flags.DEFINE_integer("checkpoint_every_steps", None, "Write a checkpoint (student + "
                         "optimizer) every this many steps (default 5000; 2 in --smoke).")
    flags.DEFINE_float("checkpoint_every_minutes", 30.0, "Also write one when this many "
                       "minutes passed since the last (checked every --log_every_steps).")
    flags.DEFINE_integer("keep_checkpoints", 3, "Keep the newest N checkpoints.")
    for name in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        flags.register_validator(name, lambda v: v is None or v >= 1,
                                 message=f"--{name} must be a positive integer.")
    flags.DEFINE_bool("overwrite", False, "Delete what --workdir holds (a run with other "
                      "settings) and start over; without it, a workdir whose recorded "
                      "settings differ is refused (kdzoo.run_dir).")
    flags.register_validator(
        "batch_size", lambda v: v is None or v >= 1,
        message="--batch_size must be a positive integer (the global batch, a multiple of "
                "the number of replicas), e.g. --batch_size=512.")
    flags.register_validator(
        "epochs", lambda v: v is None or v >= 1,
        message="--epochs must be a positive integer, e.g. --epochs=10.")
    if presets:
        flags.DEFINE_enum("preset", default_preset, sorted(presets),
                          "The paper's schedule and hyper-parameters: "
                          + "; ".join(f"{k}: {v}" for k, v in presets.items()))


@contextlib.contextmanager
def maybe_mock_data(smoke, num_examples=SMOKE_EXAMPLES):
    """Under --smoke, every TFDS dataset is replaced by random data of its real spec."""
    if not smoke:
        yield
        return
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def tiny_bit(num_classes, input_shape, head_zeroinit=False):
    """A 1-unit-per-block, half-width BiT for --smoke runs."""
    from kdzoo.models.bit import build_bit
    return build_bit(50, 0.5, num_classes=num_classes, input_shape=input_shape,
                     units=(1, 1, 1, 1), name="tiny_bit", head_zeroinit=head_zeroinit)


def load_student(name, init, **kwargs):
    """The recipe's student: ``kdzoo.load(name, weights=init)``; from scratch (``init``
    None) a BiT gets big_vision ``bit_paper``'s zero-initialised head."""
    import kdzoo
    from kdzoo.models.bit import zero_init_head
    model = kdzoo.load(name, weights=init, **kwargs)
    if init is None and kdzoo.model_info(name)["family"] == "bit":
        zero_init_head(model)
    return model


def fail(message):
    """One clear message on stderr and a non-zero exit: no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def guarded(main):
    """``main`` with the errors a user can fix turned into :func:`fail` messages."""
    def run(argv):
        from kdzoo.data import DatasetNotFoundError
        from kdzoo.errors import (CheckpointError, DownloadError, SettingsMismatchError,
                                  WorkdirInUseError)
        try:
            return main(argv)
        except DatasetNotFoundError as e:
            fail(f"{e}\nOr pass --data_dir=DIR where it is already prepared.")
        except DownloadError as e:
            fail(f"{e}\nIn a recipe, pass the downloaded file with --teacher=/path/to/FILE "
                 "(the student: --student_init=/path/to/FILE).")
        except (CheckpointError, SettingsMismatchError, WorkdirInUseError) as e:
            fail(str(e))
    return run


def run_flags(smoke):
    """The step / checkpoint fields of a run, from the flags."""
    return dict(log_every_steps=FLAGS.log_every_steps or (SMOKE_STEPS if smoke else 500),
                checkpoint_every_steps=FLAGS.checkpoint_every_steps
                or (SMOKE_STEPS if smoke else 5000),
                checkpoint_every_minutes=FLAGS.checkpoint_every_minutes,
                keep_checkpoints=FLAGS.keep_checkpoints)


def dry_run(run, **names):
    """Print a run's plan as one JSON line (``kdzoo.train.plan``)."""
    from kdzoo.train import plan
    _, info = plan(run)
    print(json.dumps(dict(info, **names), sort_keys=True))


def teacher_loader(name_or_path, default):
    """``--teacher``: a zoo name, or a local weight / model file of the default teacher."""
    import kdzoo
    value = name_or_path or default
    looks_like_file = os.sep in value or value.endswith((".npz", ".h5", ".keras"))
    if looks_like_file:
        if not os.path.exists(value):
            fail(f"--teacher={value}: no such file. Pass a zoo name (e.g. {default}) or the "
                 "path of a downloaded .npz / .weights.h5 / .keras file.")
        return functools.partial(kdzoo.load, default, weights=value)
    return functools.partial(kdzoo.load, value)


def funmatch_main(dataset, teacher_checkpoint, presets, argv):
    """The body of flowers102/pets/food101/sun397/imagenet recipes."""
    import kdzoo
    from kdzoo import grid as grids
    from kdzoo.data import get_spec
    from kdzoo.train import FunMatchRun, run_funmatch

    del argv
    spec = get_spec(dataset)
    preset = dict(presets[FLAGS.preset])
    smoke = FLAGS.smoke
    size = 32 if smoke else preset.get("image_size", spec.input_size)
    teacher_size = preset.get("teacher_image_size") or None
    if FLAGS.teacher_image_size:
        teacher_size = FLAGS.teacher_image_size
    source = FLAGS.distill_dataset or dataset
    if smoke:
        teacher = functools.partial(tiny_bit, spec.num_classes, (teacher_size and 48 or size,) * 2 + (3,))
        teacher_size = teacher_size and 48
        student = functools.partial(tiny_bit, spec.num_classes, (size, size, 3),
                                    head_zeroinit=True)
    else:
        teacher = teacher_loader(FLAGS.teacher, teacher_checkpoint)
        student = functools.partial(
            load_student, FLAGS.student, FLAGS.student_init, num_classes=spec.num_classes,
            input_shape=(size, size, 3))
    base = dict(
        dataset=dataset, teacher=teacher, student=student, variant=FLAGS.variant,
        temperature=preset["temperature"], lr=preset["lr"], weight_decay=preset["weight_decay"],
        epochs=FLAGS.epochs or (1 if smoke else preset["epochs"]),
        batch_size=FLAGS.batch_size or (4 if smoke else preset.get("batch_size", 512)),
        warmup_steps=2 if smoke else preset.get("warmup_steps", 1500),
        image_size=size, teacher_image_size=teacher_size,
        distill_dataset=None if source == dataset else source, data_dir=FLAGS.data_dir,
        strategy=FLAGS.strategy, mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.xla, seed=FLAGS.seed, deterministic=FLAGS.deterministic,
        num_train_examples=SMOKE_EXAMPLES if smoke else None,
        eval_batch_size=8 if smoke else 256, verbose=2 if smoke else "auto",
        overwrite=FLAGS.overwrite, **run_flags(smoke))
    if FLAGS.dry_run:
        dry_run(FunMatchRun(workdir=FLAGS.workdir, **base),
                teacher="tiny_bit" if smoke else (FLAGS.teacher or teacher_checkpoint),
                student="tiny_bit" if smoke else FLAGS.student,
                student_init=None if smoke else FLAGS.student_init, variant=FLAGS.variant)
        return
    if not smoke:  # before any download: a teacher is no use without the data
        from kdzoo.data.pipeline import require_prepared
        for name in dict.fromkeys((source, dataset)):
            require_prepared(name, FLAGS.data_dir)
    with maybe_mock_data(smoke):
        if not FLAGS.grid and FLAGS.grid_index is None:  # --grid_index implies --grid
            metrics = run_funmatch(FunMatchRun(workdir=FLAGS.workdir, params={
                k: preset[k] for k in ("lr", "weight_decay", "temperature")}, **base))
            print(f"minival accuracy {metrics['minival']['accuracy']:.4f}  "
                  f"test accuracy {metrics['test']['accuracy']:.4f}  "
                  f"agreement {metrics['test']['agreement']:.4f}")
            return
        points = grids.expand_grid(grids.FUNMATCH_GRID)
        indices = range(len(points)) if FLAGS.grid_index is None else [FLAGS.grid_index]
        # The points of one grid share every setting but the grid's own keys.
        from kdzoo import run_dir
        shared = {k: run_dir.describe(v) for k, v in base.items()
                  if k not in grids.FUNMATCH_GRID and k != "overwrite"}
        run_dir.check_grid(FLAGS.workdir, shared, overwrite=FLAGS.overwrite,
                           whole_grid=FLAGS.grid_index is None,
                           point_dirs=[grids.point_dir(FLAGS.workdir, i)
                                       for i in range(len(points))])
        for index in indices:
            point = grids.grid_point(grids.FUNMATCH_GRID, index)
            run_funmatch(FunMatchRun(workdir=grids.point_dir(FLAGS.workdir, index),
                                     params=point, **dict(base, **point)))
    rows = grids.finished_points(FLAGS.workdir)
    print(grids.summary_table(rows))
    best, metrics = grids.best_point(rows)
    print(f"best on minival: point {best} {metrics['params']}")


def define_funmatch_flags(student_default="bit_r50x1"):
    from kdzoo import grid as grids
    from kdzoo.distill import VARIANTS
    points = len(grids.expand_grid(grids.FUNMATCH_GRID))
    flags.register_validator(
        "grid_index", lambda v: v is None or 0 <= v < points,
        message=f"--grid_index must be in [0, {points - 1}]: the paper's FunMatch grid "
                f"has {points} points (lr x weight_decay x temperature).")
    flags.DEFINE_enum("variant", "funmatch", list(VARIANTS), "Teaching variant (Beyer et al. 2022, sec. 3).")
    flags.DEFINE_string("teacher", None, "Zoo name of the teacher (default: the paper's "
                        "teacher for this dataset), or the path of a local copy of its "
                        "weights (.npz / .weights.h5 / .keras) when there is no network.")
    flags.DEFINE_integer("teacher_image_size", None, "Teacher resolution of the same crop "
                         "(e.g. 384 with a 224 student); default: the student's.")
    flags.DEFINE_string("student", student_default, "Zoo architecture of the student, e.g. "
                        "bit_r50x1 or mobilenet_v3_large (another family).")
    flags.DEFINE_string("student_init", None, "Student init: empty for scratch (default), "
                        "'pretrained' or a checkpoint path (.npz / .weights.h5).")
    flags.DEFINE_string("distill_dataset", None, "Distill on this dataset's train images "
                        "(out-of-domain study) and evaluate on the recipe's own dataset.")
