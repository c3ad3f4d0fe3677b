"""The one runner every recipe calls: strategy, models, compile, resumable fit, metrics.

A run lives in a work directory::

    workdir/checkpoints/   ckpt-EEEEEE.weights.h5 + state.json (see kdzoo.train.checkpointing)
    workdir/logs/          TensorBoard
    workdir/config.json    what was run (recorded once; see kdzoo.train.run_dir)
    workdir/run.lock       held while a process runs in workdir
    workdir/metrics.json   final minival/test metrics (written last, atomically)
    workdir/model.keras    the trained network (FunMatch: the student), a plain keras.Model

Every method writes these same names (FunMatch runs of kdzoo before issue 26 wrote
``student.keras``; :func:`kdzoo.train.run_dir.model_file` reads either). What a run
does around its method is written once, in :mod:`kdzoo.train.run_body`.

The schedule is the authors' (big_vision ``utils.steps``): ``total_steps =
max(round(epochs * N / batch), 1)`` steps over the one continuous stream of
:mod:`kdzoo.data.stream`. Keras ``fit`` epochs are logging / checkpoint
intervals of ``log_every_steps`` steps (the last one shorter), not data epochs. A
checkpoint (student + optimizer, never the frozen teacher) is written every
``checkpoint_every_steps`` steps or ``checkpoint_every_minutes`` minutes,
whichever comes first, and at the end. A rerun after a kill resumes at exactly the
stream step recorded with the last checkpoint (also when the intervals changed or
``epochs`` grew). Evaluation is the authors' ``resize_small(R)|central_crop(S)``.
"""

import dataclasses
import os

import keras

from kdzoo.train import methods as _methods
from kdzoo.train import run_body
from kdzoo.data.pipeline import upscale_small_images  # noqa: F401  (re-exported)
from kdzoo.data.stream import labeled_stream, total_steps  # noqa: F401  (re-exported)
from kdzoo.train.fit import (Schedule, eval_batches, eval_resize_small, eval_text, fit_resumable,  # noqa: F401
                             fit_schedule, make_schedule, seed_everything, set_precision)
from kdzoo.train.precision import resolve_precision
from kdzoo.train.train_data import _train_spec, stream_shuffle, train_examples  # noqa: F401


@dataclasses.dataclass(kw_only=True)
class RunOptions:
    """What every training run has besides its method: data, hardware, seed, checkpoints,
    evaluation. :class:`FunMatchRun` and :class:`SupervisedRun` extend it (keywords only)."""

    data_dir: str | None = None
    strategy: str = "auto"
    mixed_precision: str | None = None
    jit_compile: object = "auto"
    seed: int = 0
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism()
    log_every_steps: int = 500          # one Keras epoch (progress line, checkpoint check)
    checkpoint_every_steps: int = 5000
    checkpoint_every_minutes: float | None = 30.0
    keep_checkpoints: int = 3
    num_train_examples: int | None = None  # None: all of the train split (from its info)
    train_split: str | None = None     # replaces the spec's train split ("train": all of it)
    train_per_class: int | None = None  # a class-balanced subset of the train split ...
    subset_seed: int = 0                # ... drawn once by this seed (kdzoo.data.subset)
    train_images: object = None  # callable -> uint8 images (, labels): these instead (data.arrays)
    eval_batch_size: int = 256
    eval_roles: tuple = ("minival", "test")  # the splits scored into metrics.json
    verbose: object = "auto"
    params: dict = dataclasses.field(default_factory=dict)  # grid values, for the summary
    overwrite: bool = False  # delete what workdir holds and start over (kdzoo.train.run_dir)

    def train(self):
        """Run this training run; returns the metrics dict.

        Why a method: a study (:func:`kdzoo.train.study.run_one`) asks the run to train
        itself instead of testing its class, so a new kind of run (or a subclass of one)
        brings its own trainer in its own file. Each subclass names its ``run_*``.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not say how it trains: define train() "
            "(FunMatchRun and SupervisedRun call run_funmatch / run_supervised).")


@dataclasses.dataclass
class FunMatchRun(RunOptions):
    """One FunMatch training run (a recipe fills this in; one grid point = one run).

    ``teacher`` / ``student`` are callables returning Keras models (so recipes
    choose zoo names, checkpoints or tiny smoke models). ``weight_decay`` is the
    paper's decoupled wd (see ``kdzoo.optim.paper_adam``).
    """

    dataset: str
    teacher: object
    student: object
    workdir: str
    variant: str = "funmatch"
    temperature: float = 1.0
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 1
    batch_size: int = 512
    warmup_steps: int = 1500
    image_size: int | None = None
    teacher_image_size: int | None = None
    distill_dataset: str | None = None   # out-of-domain: distill on these images
    distiller_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. mixup_alpha
    optimizer: object = None  # callable (total_steps, warmup_steps) -> optimizer; None: paper Adam
    teacher_cache: str | None = None  # train from this file (write_teacher_cache), no teacher

    def train(self):
        """:func:`run_funmatch` on this run (see :meth:`RunOptions.train`)."""
        return run_funmatch(self)


def plan(run, num_train_examples=None):
    """The plan of a :class:`FunMatchRun` / :class:`SupervisedRun`, without data or models.

    ``num_train_examples`` defaults to ``run.num_train_examples`` or the TFDS
    catalog size of the train split (no data read). Returns ``(Schedule, dict)``;
    the dict is what a recipe's ``--dry_run`` prints.
    """
    from kdzoo.data import get_spec, split_size
    spec = get_spec(run.dataset)
    image_size = run.image_size or spec.input_size
    n = num_train_examples or (run.train_per_class and run.train_per_class * spec.num_classes) \
        or run.num_train_examples or split_size(_train_spec(run), "train")
    schedule = make_schedule(run.epochs, n, run.batch_size, log_every_steps=run.log_every_steps,
                             checkpoint_every_steps=run.checkpoint_every_steps,
                             warmup_steps=getattr(run, "warmup_steps", 0))
    teacher_size = getattr(run, "teacher_image_size", None)
    return schedule, {
        "dataset": spec.name, "total_steps": schedule.total_steps,
        "warmup_steps": schedule.warmup_steps, "batch_size": run.batch_size,
        "train_examples": n, "epochs": run.epochs, "steps_per_log": schedule.interval,
        "checkpoint_every_steps": schedule.checkpoint_every_steps,
        "checkpoint_every_minutes": run.checkpoint_every_minutes,
        "keep_checkpoints": run.keep_checkpoints, "eval": eval_text(spec, image_size),
        "image_size": image_size, "teacher_image_size": teacher_size or image_size,
        "precision": resolve_precision(run.mixed_precision or "float32")}


def _funmatch_setup(run, strategy):
    """``(spec, schedule, distiller, train images, N)`` of a FunMatch run, compiled."""
    from kdzoo.data import get_spec
    from kdzoo.distill import FunMatchDistiller, paper_optimizer

    spec = get_spec(run.dataset)
    image_size = run.image_size or spec.input_size
    train_images, n_train = train_examples(run)
    schedule, _ = plan(run, n_train)
    with strategy.scope():
        distiller = FunMatchDistiller(
            run.teacher(), run.student(), variant=run.variant, temperature=run.temperature,
            image_size=image_size, teacher_image_size=run.teacher_image_size, seed=run.seed,
            **{**stream_shuffle(run), **run.distiller_kwargs})
        distiller.compile(optimizer=run.optimizer(schedule.total_steps, schedule.warmup_steps)
                          if run.optimizer else paper_optimizer(
                              run.lr, schedule.total_steps, schedule.warmup_steps,
                              run.weight_decay), jit_compile=run.jit_compile)
    min_side = max(image_size, run.teacher_image_size or 0)
    return spec, schedule, distiller, upscale_small_images(train_images, min_side), n_train


def write_teacher_cache(run, path, top_k=None, dtype="float16"):
    """Run ``run``'s teacher once over every train view of its whole schedule, into ``path``.

    Every run that differs from ``run`` only in :data:`kdzoo.train.grid.TEACHER_FREE`
    settings (lr, weight decay, temperature, a shorter budget) sees these very views,
    so a grid writes this once and gives its points ``teacher_cache=path``.
    Returns the opened :class:`kdzoo.distill.funmatch.teacher_cache.TeacherCache`.
    """
    from kdzoo.atomic import writer_lock
    _, strategy = run_body.preamble(run, check_split=False)
    _, schedule, distiller, images, n = _funmatch_setup(run, strategy)
    # A killed write leaves a partial cache (up to the whole size) as .tmp-<name>-*: it
    # is removed first, under the cache's lock, so it does not count against free space.
    with writer_lock(path, what=f"The teacher cache {path}"):
        return _write_cache(run, path, top_k, dtype, schedule, distiller, images, n)


def _write_cache(run, path, top_k, dtype, schedule, distiller, images, n):
    import shutil

    import numpy as np

    from kdzoo.distill.funmatch.cache_writer import cache_teacher
    from kdzoo.errors import RecipeError
    steps_per_epoch = n // run.batch_size
    epochs = -(-schedule.total_steps // steps_per_epoch)
    # Paper scale: 2M steps x 512 views x 102 classes of float16 is 209 GB; say so first.
    k = top_k or distiller.num_classes
    per_view = np.dtype(dtype).itemsize * (k if k == distiller.num_classes else 2 * k + 1)
    need = epochs * steps_per_epoch * run.batch_size * len(distiller.teachers) * per_view
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if need > free:
        raise RecipeError(
            f"The teacher cache {path} would take {need / 1e9:.1f} GB ({epochs * steps_per_epoch} "
            f"steps x {run.batch_size} views x {k} logits); {free / 1e9:.1f} GB are free there. "
            "Free space, use a shorter schedule, or train without the cache "
            "(--nogrid_cache).")
    return cache_teacher(distiller, images, path, top_k=top_k, dtype=dtype, num_images=n,
                         epochs=epochs, batch_size=run.batch_size)


def run_funmatch(run):
    """Train a student by FunMatch as described by ``run``; returns the metrics dict."""
    return run_body.execute(run, lambda strategy: _funmatch_prepared(run, strategy))


def _funmatch_prepared(run, strategy):
    """FunMatch's part of a run (:class:`kdzoo.train.run_body.Prepared`): the distiller, its
    own train stream (from the teacher cache once the workdir is claimed) and eval views."""
    from kdzoo.data import load_split

    spec, schedule, distiller, train_images, n_train = _funmatch_setup(run, strategy)
    min_side = max(distiller.image_size, run.teacher_image_size or 0)
    resize_small = eval_resize_small(spec, distiller.image_size)
    cache = []  # the opened teacher cache, once claimed

    def open_cache():
        if run.teacher_cache:
            cache.append(distiller.use_teacher_cache(run.teacher_cache))

    def eval_split(role):
        images = upscale_small_images(load_split(spec, role, run.data_dir), min_side)
        return distiller.make_eval_dataset(images, run.eval_batch_size, resize_small=resize_small)

    def make_train(step):
        if cache:
            cache[0].check_steps(step, schedule.total_steps)
        return distiller.make_train_dataset(train_images, run.batch_size, initial_step=step,
                                            num_images=n_train)

    return run_body.Prepared(
        model=distiller, schedule=schedule, make_train=make_train, eval_split=eval_split,
        eval_text=eval_text(spec, distiller.image_size), export=lambda: distiller.student,
        teachers=distiller.teachers, on_claimed=open_cache)


@dataclasses.dataclass
class SupervisedRun(RunOptions):
    """Training on labels: a plain network, a self-distilled one, deep supervision, or KD.

    ``model``: callable returning the network (a zoo backbone). ``method``
    (:mod:`kdzoo.train.methods`): ``"labels"`` (plain CE; with ``mixup_alpha`` the paper's
    "fine-tune with mixup" baseline), ``"self_distillation"`` or ``"deep_supervision"``
    (``kdzoo.SelfDistillation`` over the stages; ``version``: its BYOT version,
    :mod:`kdzoo.distill.self_distill.byot_versions`), ``"knowledge_distillation"`` (classical
    KD from the frozen ``teacher``: a keras.Model, a ``.keras`` path or a callable;
    ``alpha`` / ``temperature`` as :mod:`kdzoo.distill.classical_kd`; ``model.keras`` is the
    student).
    ``optimizer``: callable ``total_steps -> keras optimizer``. ``best_epoch_report``: the per-epoch
    minival / test report (:mod:`kdzoo.distill.self_distill.exit_reporting`) and its best / last
    epoch keys in ``metrics.json``; ``None``: on for the exits' methods only.
    """

    dataset: str
    model: object
    optimizer: object
    workdir: str
    method: str = "labels"
    epochs: int = 1
    batch_size: int = 128
    image_size: int | None = None
    crop: str | None = "random"
    flip: bool = True
    inception_area_range: tuple = (0.05, 1.0)  # with crop="inception" (the authors' default)
    pad_fill: int = 0                  # with crop="pad": the border's grey (BYOT pads 128)
    autoaugment: str | None = None     # an AutoAugment policy after crop + flip ("cifar10")
    cutout: int | None = None          # then Cutout: one square hole of this side
    mixup_alpha: float | None = None
    alpha: float = 0.3
    temperature: float = 3.0
    feature_weight: float = 0.03
    best_epoch_report: bool | None = None  # None: on for SelfDistillation models only
    version: str | None = None  # SelfDistillation(version=): "journal" / "iccv2019" heads+hint
    teacher: object = None  # method="knowledge_distillation": the frozen, trained teacher

    def train(self):
        """:func:`run_supervised` on this run (see :meth:`RunOptions.train`)."""
        return run_supervised(self)


METHODS = tuple(_methods.METHODS)  # "labels", "self_distillation", "deep_supervision", ...


def run_supervised(run):
    """Train ``run.model()`` on labels by ``run.method``; returns the metrics dict."""
    from kdzoo.data import get_spec

    method = _methods.get_method(run)
    spec = get_spec(run.dataset)
    return run_body.execute(run, lambda strategy: _supervised_prepared(run, method, spec,
                                                                       strategy))


def _supervised_prepared(run, method, spec, strategy):
    """A label-trained method's part of a run: its model built by ``method`` (see
    :mod:`kdzoo.train.methods`), the labeled stream and the eval batches."""
    from kdzoo.data import load_split

    size = run.image_size or spec.input_size
    train, n_train = train_examples(run)
    schedule, _ = plan(run, n_train)
    with strategy.scope():
        model = method.build(run, spec, schedule.total_steps)

    def make_train(step):
        return labeled_stream(
            train, num_classes=spec.num_classes, image_size=size, batch_size=run.batch_size,
            seed=run.seed, initial_step=step, crop=run.crop, flip=run.flip,
            mixup_alpha=run.mixup_alpha, num_examples=n_train,
            inception_area_range=tuple(run.inception_area_range), pad_fill=run.pad_fill,
            autoaugment=run.autoaugment, cutout=run.cutout)

    def eval_split(role):
        batches = eval_batches(load_split(spec, role, run.data_dir), size, run.eval_batch_size,
                               eval_resize_small(spec, size))
        if run.method == "labels" and run.mixup_alpha:
            batches = batches.map(lambda x, y: (x, keras.ops.one_hot(y, spec.num_classes)))
        return batches

    return run_body.Prepared(
        model=model, schedule=schedule, make_train=make_train, eval_split=eval_split,
        eval_text=eval_text(spec, size), export=lambda: method.export(model),
        teachers=tuple(method.teachers(model)), metrics={"method": run.method})
