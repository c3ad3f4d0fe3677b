"""What a FunMatch recipe does with its options: the logic behind ``recipes/*.py``.

Why here: a recipe file is a config (dataset, the paper's teacher, presets); the
code that turns options into runs is the same for every dataset and belongs to
the library, where it is tested once: the ``--smoke`` substitution (tiny BiTs on
``tfds.testing.mock_data``; its values all in one place,
:func:`kdzoo.train.recipe_config.smoke_overrides`), ``--dry_run``, the data check
before any download, and the grid loop with its summary. ``options`` is any object
with the recipes' option names as attributes (absl's ``FLAGS`` in the recipes);
nothing here parses a command line.
"""

import contextlib
import dataclasses
import functools
import json
import os

from kdzoo.errors import RecipeError
from kdzoo.train.recipe_checks import check_model_flag, dry_run_params, smoke_substitution
from kdzoo.train.recipe_config import RUN_DEFAULTS, SMOKE_EXAMPLES, resolve


@dataclasses.dataclass(frozen=True)
class FunMatchRecipe:
    """One dataset's FunMatch recipe: the data a ``recipes/<name>.py`` holds."""

    dataset: str
    teacher: str                 # zoo card of the paper's teacher for this dataset
    presets: dict                # name -> dict(epochs, lr, weight_decay, temperature, ...;
                                 # optionally "teacher": that preset's own teacher card)
    default_preset: str = "fast"
    student: str = "bit_r50x1"


@contextlib.contextmanager
def maybe_mock_data(smoke, num_examples=SMOKE_EXAMPLES):
    """Under --smoke, every TFDS dataset is replaced by random data of its real spec."""
    if not smoke:
        yield
        return
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=num_examples,
                                policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def load_student(name, init, **kwargs):
    """``kdzoo.load(name, weights=init)`` as big_vision ``bit_paper`` builds a BiT student:
    its stem max-pool padded with -inf, and from scratch (``init`` None) a zero head."""
    import kdzoo
    from kdzoo.models.bit import zero_init_head
    bit = kdzoo.model_info(name)["family"] == "bit"
    options = {"build_options": {"stem_pool_padding": "neg_inf"}} if bit else {}
    model = kdzoo.load(name, weights=init, **options, **kwargs)
    if init is None and bit:
        zero_init_head(model)
    return model


def teacher_loader(name_or_path, default):
    """``--teacher``: a zoo name, or a local weight / model file of the default teacher."""
    import kdzoo
    value = name_or_path or default
    if os.sep in value or value.endswith((".npz", ".h5", ".keras")):
        if not os.path.exists(value):
            raise RecipeError(f"--teacher={value}: no such file. Pass a zoo name (e.g. "
                              f"{default}) or the path of a downloaded .npz / .weights.h5 / "
                              ".keras file.")
        return functools.partial(kdzoo.load, default, weights=value)
    return functools.partial(kdzoo.load, value)


_STEP_KEYS = ("log_every_steps", "checkpoint_every_steps")


def run_flags(options, smoke):
    """The step / checkpoint fields of a run, from the options."""
    return _run_flags(options, resolve({k: RUN_DEFAULTS[k] for k in _STEP_KEYS}, options, smoke))


def _run_flags(options, settings):
    """The step / checkpoint fields of a run, from its resolved ``settings``."""
    return dict({k: settings[k] for k in _STEP_KEYS},
                checkpoint_every_minutes=options.checkpoint_every_minutes,
                keep_checkpoints=options.keep_checkpoints)


def print_plan(run, **names):
    """``--dry_run``: a run's plan as one JSON line (:func:`kdzoo.train.plan`)."""
    from kdzoo.train import plan
    print(json.dumps(dict(plan(run)[1], **names), sort_keys=True))


def _models(recipe, spec, options, s):
    """(teacher, student) at the resolved sizes: the recipe's, or tiny BiTs under --smoke
    (the one place a smoke run builds other models, and says so)."""
    from kdzoo.models.bit import tiny_bit
    size = s["image_size"]
    if options.smoke:
        smoke_substitution(recipe, options)
        teacher_shape = ((s["teacher_image_size"] or size),) * 2 + (3,)
        return (functools.partial(tiny_bit, spec.num_classes, teacher_shape),
                functools.partial(tiny_bit, spec.num_classes, (size, size, 3),
                                  head_zeroinit=True))
    student = functools.partial(load_student, s["student"], s["student_init"],
                                num_classes=spec.num_classes, input_shape=(size, size, 3))
    return teacher_loader(s["teacher"], _teacher_card(recipe, options)), student


def _teacher_card(recipe, options):
    return recipe.presets[options.preset].get("teacher", recipe.teacher)


def funmatch_settings(recipe, options):
    """A FunMatch recipe run's resolved settings: the preset's (and the flags'), with
    :func:`smoke_overrides` in their place under ``--smoke``. The model flags are checked
    against the zoo first, also under ``--smoke`` and ``--dry_run``."""
    from kdzoo.data import get_spec
    check_model_flag("student", options.student,
                     needs_weights=options.student_init == "pretrained")
    check_model_flag("teacher", options.teacher, needs_weights=True)
    spec, preset = get_spec(recipe.dataset), recipe.presets[options.preset]
    return resolve(dict(
        RUN_DEFAULTS, teacher=options.teacher or _teacher_card(recipe, options),
        student=options.student, student_init=options.student_init,
        image_size=preset.get("image_size", spec.input_size),
        teacher_image_size=options.teacher_image_size or preset.get("teacher_image_size") or None,
        epochs=preset["epochs"], batch_size=preset.get("batch_size", 512),
        warmup_steps=preset.get("warmup_steps", 1500), eval_batch_size=256),
        options, options.smoke, "funmatch")


def funmatch_base(recipe, options, settings=None):
    """The :class:`kdzoo.train.FunMatchRun` fields of a recipe run (all but workdir/params),
    from its :func:`funmatch_settings` (resolved here unless given)."""
    from kdzoo.data import get_spec
    s = settings or funmatch_settings(recipe, options)
    spec, preset = get_spec(recipe.dataset), recipe.presets[options.preset]
    teacher, student = _models(recipe, spec, options, s)
    source = options.distill_dataset or recipe.dataset
    return dict(
        dataset=recipe.dataset, teacher=teacher, student=student, variant=options.variant,
        temperature=preset["temperature"], lr=preset["lr"], weight_decay=preset["weight_decay"],
        epochs=s["epochs"], batch_size=s["batch_size"], warmup_steps=s["warmup_steps"],
        image_size=s["image_size"], teacher_image_size=s["teacher_image_size"],
        distill_dataset=None if source == recipe.dataset else source,
        data_dir=options.data_dir, strategy=options.strategy,
        mixed_precision=options.mixed_precision, jit_compile=options.xla, seed=options.seed,
        deterministic=options.deterministic, num_train_examples=s["num_train_examples"],
        eval_batch_size=s["eval_batch_size"], verbose=s["verbose"],
        overwrite=options.overwrite, **_run_flags(options, s))


def _dry_run(options, base, s):
    """The plan, with the hyper-parameters of the preset or of the ``--grid_index`` point."""
    from kdzoo.train import grid as grids
    from kdzoo.train import FunMatchRun
    params = dry_run_params(base, options, grids.FUNMATCH_GRID)
    point = {k: params[k] for k in grids.FUNMATCH_GRID if options.grid_index is not None}
    print_plan(FunMatchRun(workdir=options.workdir, **dict(base, **point)), **params,
               teacher=s["teacher"], student=s["student"], student_init=s["student_init"],
               variant=options.variant)


def _require_data(recipe, options):
    """Before any download: a teacher is no use without the data."""
    from kdzoo.data.pipeline import require_prepared
    for name in dict.fromkeys((options.distill_dataset or recipe.dataset, recipe.dataset)):
        require_prepared(name, options.data_dir)


def _one_run(recipe, options, base):
    from kdzoo.train import FunMatchRun, run_funmatch
    preset = recipe.presets[options.preset]
    metrics = run_funmatch(FunMatchRun(workdir=options.workdir, params={
        k: preset[k] for k in ("lr", "weight_decay", "temperature")}, **base))
    print(f"minival accuracy {metrics['minival']['accuracy']:.4f}  "
          f"test accuracy {metrics['test']['accuracy']:.4f}  "
          f"agreement {metrics['test']['agreement']:.4f}")


GRID_CACHE = "teacher.tcache"


def _grid_teacher_cache(options, base, n_train, rebuild=False):
    """The grid's one teacher-output cache, ``<workdir>/teacher.tcache``: written by the first
    process to need it (others wait on its lock), or None for ``fix/*`` (targets once per
    point already) and ``--nogrid_cache``. One built for a shorter schedule, or any under
    ``rebuild`` (``--grid --overwrite``), is rebuilt (the views of the shorter schedule are a
    prefix of the longer one's, so finished points keep their meaning)."""
    from kdzoo.file_lock import FileLock
    from kdzoo.train import FunMatchRun, write_teacher_cache
    from kdzoo.distill.funmatch.variants import get_variant
    if get_variant(base["variant"]).fixed or not options.grid_cache:
        return None
    path = os.path.join(options.workdir, GRID_CACHE)
    run = FunMatchRun(workdir=options.workdir, **base)
    os.makedirs(options.workdir, exist_ok=True)
    with FileLock(path + ".lock", what=f"The grid's teacher cache {path}", blocking=True):
        why = "--overwrite" if rebuild else _cache_too_short(path, run, n_train)
        if why or not os.path.exists(path):
            if why and os.path.exists(path):
                print(f"Rebuilding the grid's teacher cache {path} ({why}).", flush=True)
            write_teacher_cache(run, path)
    return path


def _cache_too_short(path, run, n_train):
    """Why the cache at ``path`` cannot serve ``run`` (``None``: it can, or there is none)."""
    from kdzoo.distill.funmatch.teacher_cache import open_teacher_cache
    from kdzoo.train import plan
    if not os.path.exists(path):
        return None
    have = open_teacher_cache(path, verify=False).epochs[1]
    need = -(-plan(run, n_train)[0].total_steps // (n_train // run.batch_size))
    return None if have >= need else f"it covers {have} epochs, --epochs needs {need}"


def _grid(options, base):
    """The paper's grid (or one point of it); points share every other setting, and the
    teacher runs once for all of them (lr, weight decay and T leave its views unchanged)."""
    from kdzoo.train import grid as grids
    from kdzoo.train import run_dir
    from kdzoo.train import FunMatchRun, run_funmatch, train_examples
    _, n_train = train_examples(FunMatchRun(workdir=options.workdir, **base))  # before writing
    points = grids.expand_grid(grids.FUNMATCH_GRID)
    indices = range(len(points)) if options.grid_index is None else [options.grid_index]
    shared = {k: run_dir.describe(v) for k, v in base.items()
              if k not in grids.FUNMATCH_GRID and k != "overwrite"}
    run_dir.check_grid(options.workdir, shared, overwrite=options.overwrite,
                       whole_grid=options.grid_index is None,
                       point_dirs=[grids.point_dir(options.workdir, i)
                                   for i in range(len(points))],
                       shared_files=[os.path.join(options.workdir, GRID_CACHE)])
    cache = _grid_teacher_cache(options, base, n_train,
                                rebuild=options.overwrite and options.grid_index is None)
    for index in indices:
        point = grids.grid_point(grids.FUNMATCH_GRID, index)
        run_funmatch(FunMatchRun(workdir=grids.point_dir(options.workdir, index),
                                 params=point, teacher_cache=cache, **dict(base, **point)))
    rows = grids.finished_points(options.workdir)
    print(grids.summary_table(rows))
    best, metrics = grids.best_point(rows)
    print(f"best on minival: point {best} {metrics['params']}")


def run_funmatch_recipe(recipe, options):
    """Everything ``python recipes/<dataset>.py [options]`` does."""
    settings = funmatch_settings(recipe, options)
    base = funmatch_base(recipe, options, settings)
    if options.dry_run:
        return _dry_run(options, base, settings)
    if settings["require_data"]:
        _require_data(recipe, options)
    with maybe_mock_data(settings["mock_data"]):
        if options.grid or options.grid_index is not None:  # --grid_index implies --grid
            return _grid(options, base)
        return _one_run(recipe, options, base)


@dataclasses.dataclass(frozen=True)
class SelfDistillRecipe:
    """A self-distillation recipe (Zhang et al. 2019): dataset and the authors' schedule."""

    dataset: str = "cifar100"
    epochs: int = 250          # train.py line 17
    batch_size: int = 128      # train.py line 23
    image_size: int = 32
    pad_fill: int = 128        # RandomCrop(32, padding=4, fill=128), line 35
    autoaugment: str = "cifar10"  # CIFAR10Policy(), line 36 (--autoaugment, line 21)
    cutout: int = 16           # Cutout(n_holes=1, length=16), line 37


def _official_sgd(lr, weight_decay, epochs, total_steps):
    """``TorchSGD`` with the official per-epoch schedule, for ``total_steps`` steps."""
    from kdzoo.optim.torch_sgd import TorchSGD, official_schedule
    steps_per_epoch = max(1, total_steps // epochs)
    return TorchSGD(official_schedule(steps_per_epoch, epochs, lr), momentum=0.9,
                    weight_decay=weight_decay)


def self_distill_run(recipe, options):
    """The :class:`kdzoo.train.SupervisedRun` of ``--arch/--mode`` (tiny net under --smoke)."""
    import kdzoo
    from kdzoo.data import get_spec
    from kdzoo.train import SupervisedRun
    spec, size = get_spec(recipe.dataset), recipe.image_size
    s = self_distill_settings(recipe, options)
    model = functools.partial(kdzoo.load, s["student"], weights=None,
                              num_classes=spec.num_classes, **s["student_kwargs"])
    epochs = s["epochs"]
    train_split = None if options.minival else "train"  # all 50,000 unless --minival
    return SupervisedRun(
        dataset=recipe.dataset, model=model, train_split=train_split,
        optimizer=functools.partial(_official_sgd, options.lr, options.weight_decay, epochs),
        workdir=options.workdir, method="labels" if options.mode == "plain" else options.mode,
        epochs=epochs, batch_size=s["batch_size"],
        image_size=size, crop="pad", pad_fill=recipe.pad_fill,
        autoaugment=recipe.autoaugment if options.autoaugment else None,
        cutout=recipe.cutout if options.autoaugment else None,
        alpha=options.alpha, temperature=options.temperature,
        feature_weight=options.feature_weight, data_dir=options.data_dir,
        strategy=options.strategy, mixed_precision=options.mixed_precision,
        jit_compile=options.xla, seed=options.seed, deterministic=options.deterministic,
        num_train_examples=s["num_train_examples"],
        eval_batch_size=s["eval_batch_size"], verbose=s["verbose"],
        params={"arch": options.arch, "mode": options.mode,
                "train_split": train_split or spec.train_split,
                "optimizer": "TorchSGD(momentum=0.9, coupled weight decay)",
                "weight_decay": options.weight_decay, "lr": options.lr},
        overwrite=options.overwrite, **_run_flags(options, s))


def self_distill_settings(recipe, options):
    """A self-distillation recipe run's resolved settings: ``--arch`` and the authors'
    schedule, with :func:`smoke_overrides` in their place under ``--smoke``."""
    return resolve(dict(RUN_DEFAULTS, student=options.arch, student_kwargs={},
                        epochs=recipe.epochs, batch_size=recipe.batch_size,
                        eval_batch_size=500),
                   options, options.smoke, "self_distill", image_size=recipe.image_size)


def run_self_distill_recipe(recipe, options):
    """Everything ``python recipes/cifar100.py [options]`` does."""
    from kdzoo.data.pipeline import require_prepared
    from kdzoo.train import run_supervised
    run, s = self_distill_run(recipe, options), self_distill_settings(recipe, options)
    if options.dry_run:
        return print_plan(run, mode=options.mode, lr=options.lr,
                          weight_decay=options.weight_decay, temperature=options.temperature,
                          teacher=None if options.mode == "plain" else "self (deepest exit)",
                          student=s["student"])
    if s["require_data"]:
        require_prepared(recipe.dataset, options.data_dir)
    with maybe_mock_data(s["mock_data"]):
        metrics = run_supervised(run)
    print({k: round(v, 4) for k, v in metrics["test"].items()})
