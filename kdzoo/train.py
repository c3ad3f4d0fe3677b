"""The one runner every recipe calls: strategy, models, compile, resumable fit, metrics.

A run lives in a work directory::

    workdir/checkpoints/   ckpt-EEEEEE.weights.h5 + state.json (see kdzoo.checkpointing)
    workdir/logs/          TensorBoard
    workdir/config.json    what was run (recorded once; see kdzoo.run_dir)
    workdir/run.lock       held while a process runs in workdir
    workdir/metrics.json   final minival/test metrics (written last, atomically)
    workdir/student.keras  the trained student / network, a plain keras.Model

The schedule is the authors' (big_vision ``utils.steps``): ``total_steps =
max(round(epochs * N / batch), 1)`` steps over the one continuous stream of
:mod:`kdzoo.distill.stream`. Keras ``fit`` epochs are logging / checkpoint
intervals of ``log_every_steps`` steps (the last one shorter), not data epochs,
so a million-epoch run is a few thousand progress lines, not a million. A
checkpoint (student + optimizer, never the frozen teacher) is written every
``checkpoint_every_steps`` steps or ``checkpoint_every_minutes`` minutes,
whichever comes first, and at the end. Rerunning the same command after a kill
resumes from the last checkpoint at exactly the stream position it reached.
Evaluation is the authors' ``resize_small(R)|central_crop(S)`` from the spec.
"""

import dataclasses
import numbers
import os

import keras

from kdzoo import checkpointing, run_dir
from kdzoo.atomic import save_model
from kdzoo.distribute import get_strategy, split_batch, worker_subdir
from kdzoo.data.pipeline import upscale_small_images  # noqa: F401  (re-exported)
from kdzoo.distill.stream import labeled_stream, total_steps  # noqa: F401  (re-exported)
from kdzoo.precision import resolve_precision


def seed_everything(seed, deterministic=False):
    """Seed Python, NumPy and TF/Keras init; optionally make TF ops deterministic."""
    import tensorflow as tf
    keras.utils.set_random_seed(int(seed))
    # TF's global seed must not be 0: tf.data's shuffle with a per-epoch tensor seed
    # then fails while tracing (random_seed.get_seed compares the seeds to (0, 0)).
    tf.random.set_seed(int(seed) + 0x5EED)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def set_precision(mixed_precision):
    """``None``/``"float32"``, ``"mixed_bfloat16"``, ``"mixed_float16"`` or ``"auto"``.

    ``"auto"``: bf16 where the hardware runs it natively, see :mod:`kdzoo.precision`.
    """
    policy = resolve_precision(mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    return policy


def fit_resumable(model, make_train, *, workdir, epochs, steps_per_epoch=None,
                  validation_data=None, checkpoint_every=1, callbacks=(), verbose="auto",
                  last_epoch_steps=None, checkpoint_every_minutes=None, keep_checkpoints=2):
    """``model.fit`` that resumes from ``workdir/checkpoints`` and checkpoints atomically.

    ``make_train(initial_epoch)`` returns the training data from that epoch on
    (deterministic in the epoch). Checkpoints: every ``checkpoint_every`` epochs or
    ``checkpoint_every_minutes``, whichever first, and after the last epoch; the
    last ``keep_checkpoints`` are kept. ``last_epoch_steps``: the final epoch runs
    only this many steps (a schedule that is not a whole number of intervals).
    Returns the number of epochs trained now.
    """
    ckpt_dir = os.path.join(workdir, "checkpoints")
    initial_epoch = checkpointing.restore(model, ckpt_dir)
    if initial_epoch >= epochs:
        return 0
    # Every worker of a multi-worker run restores the chief's checkpoint; only the
    # chief writes into workdir, the others into workdir/worker-<i> (never read back).
    own = os.path.join(workdir, worker_subdir() or "")
    os.makedirs(own, exist_ok=True)
    all_callbacks = [checkpointing.StopOnNonFiniteLoss(),
                     checkpointing.ResumableCheckpoint(
                         os.path.join(own, "checkpoints"), every=checkpoint_every,
                         keep=keep_checkpoints, every_minutes=checkpoint_every_minutes),
                     keras.callbacks.TensorBoard(os.path.join(own, "logs")),
                     keras.callbacks.CSVLogger(os.path.join(own, "history.csv"), append=True),
                     *callbacks]
    short = last_epoch_steps is not None and steps_per_epoch and last_epoch_steps < steps_per_epoch
    legs = [(epochs - 1, steps_per_epoch), (epochs, last_epoch_steps)] if short else \
        [(epochs, steps_per_epoch)]
    start = initial_epoch
    for end, steps in legs:
        if start >= end:
            continue
        model.fit(make_train(start), epochs=end, initial_epoch=start, steps_per_epoch=steps,
                  validation_data=validation_data, callbacks=all_callbacks, verbose=verbose)
        start = end
    return epochs - initial_epoch


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The step plan of a run: the authors' step count cut into Keras-epoch intervals."""

    total_steps: int
    interval: int            # steps per Keras epoch (logging / checkpoint granularity)
    epochs: int              # Keras epochs = ceil(total_steps / interval)
    last_epoch_steps: int    # steps of the final Keras epoch (<= interval)
    checkpoint_every: int    # in Keras epochs
    warmup_steps: int

    @property
    def checkpoint_every_steps(self):
        return self.checkpoint_every * self.interval

    def step_of(self, epoch):
        """The global step at the start of Keras epoch ``epoch`` (= the stream position)."""
        return min(int(epoch) * self.interval, self.total_steps)


def make_schedule(epochs, num_examples, batch_size, *, log_every_steps=500,
                  checkpoint_every_steps=5000, warmup_steps=0):
    """:class:`Schedule` for ``epochs`` data epochs of ``num_examples`` at ``batch_size``."""
    total = total_steps(epochs, num_examples, batch_size)
    for name, value in (("log_every_steps", log_every_steps),
                        ("checkpoint_every_steps", checkpoint_every_steps)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    interval = max(1, min(int(log_every_steps), int(checkpoint_every_steps), total))
    count = -(-total // interval)
    return Schedule(total_steps=total, interval=interval, epochs=count,
                    last_epoch_steps=total - (count - 1) * interval,
                    checkpoint_every=max(1, round(checkpoint_every_steps / interval)),
                    warmup_steps=max(0, min(int(warmup_steps), total - 1)))


def eval_text(spec, image_size):
    """The evaluation preprocessing as text, e.g. ``resize_small(160)|central_crop(128)``."""
    return f"resize_small({eval_resize_small(spec, image_size)})|central_crop({image_size})"


def eval_resize_small(spec, image_size):
    """The spec's ``resize_small`` scaled to ``image_size`` (160 at 128 px stays 160)."""
    return round(spec.eval_resize_small * int(image_size) / spec.input_size)


@dataclasses.dataclass
class FunMatchRun:
    """One FunMatch training run (a recipe fills this in; one grid point = one run).

    ``teacher`` / ``student`` are callables returning Keras models (so recipes
    choose zoo names, checkpoints or tiny smoke models). ``weight_decay`` is the
    paper's decoupled wd (see ``kdzoo.distill.optim``).
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
    eval_batch_size: int = 256
    verbose: object = "auto"
    params: dict = dataclasses.field(default_factory=dict)  # grid values, for the summary
    overwrite: bool = False  # delete what workdir holds and start over (kdzoo.run_dir)
    distiller_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. mixup_alpha


def plan(run, num_train_examples=None):
    """The plan of a :class:`FunMatchRun` / :class:`SupervisedRun`, without data or models.

    ``num_train_examples`` defaults to ``run.num_train_examples`` or the TFDS
    catalog size of the train split (no data read). Returns ``(Schedule, dict)``;
    the dict is what a recipe's ``--dry_run`` prints.
    """
    from kdzoo.data import get_spec, split_size
    spec = get_spec(run.dataset)
    image_size = run.image_size or spec.input_size
    source = getattr(run, "distill_dataset", None) or run.dataset
    n = num_train_examples or run.num_train_examples or split_size(source, "train")
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


def _fit(model, make_train, run, schedule):
    """fit_resumable over ``schedule``: Keras epoch ``e`` starts at step ``e * interval``."""
    fit_resumable(model, lambda e: make_train(schedule.step_of(e)), workdir=run.workdir,
                  epochs=schedule.epochs, steps_per_epoch=schedule.interval,
                  last_epoch_steps=schedule.last_epoch_steps,
                  checkpoint_every=schedule.checkpoint_every,
                  checkpoint_every_minutes=run.checkpoint_every_minutes,
                  keep_checkpoints=run.keep_checkpoints, verbose=run.verbose)


def _summary(run, schedule):
    return {"params": run.params, "epochs": run.epochs, "total_steps": schedule.total_steps,
            "steps_per_log": schedule.interval}


def run_funmatch(run):
    """Train a student by FunMatch as described by ``run``; returns the metrics dict."""
    from kdzoo.data import get_spec, load_split, num_examples
    from kdzoo.distill import FunMatchDistiller, paper_optimizer

    spec = get_spec(run.dataset)
    image_size = run.image_size or spec.input_size
    set_precision(run.mixed_precision)
    seed_everything(run.seed, run.deterministic)
    strategy = get_strategy(run.strategy)
    split_batch(run.batch_size, strategy)  # a clear error if it does not split evenly
    # One workdir = one run: lock it for the run's life, record / compare its settings.
    workdir_lock = run_dir.claim(run.workdir, run_dir.settings_of(run),
                                 overwrite=run.overwrite, worker=worker_subdir())
    train_source = run.distill_dataset or run.dataset
    n_train = run.num_train_examples or num_examples(train_source, "train", run.data_dir)
    schedule, _ = plan(run, n_train)
    with strategy.scope():
        distiller = FunMatchDistiller(
            run.teacher(), run.student(), variant=run.variant, temperature=run.temperature,
            image_size=image_size, teacher_image_size=run.teacher_image_size, seed=run.seed,
            **run.distiller_kwargs)
        distiller.compile(
            optimizer=paper_optimizer(run.lr, schedule.total_steps, schedule.warmup_steps,
                                      run.weight_decay),
            jit_compile=run.jit_compile)
    min_side = max(image_size, run.teacher_image_size or 0)
    train_images = upscale_small_images(load_split(train_source, "train", run.data_dir), min_side)
    if run.num_train_examples:
        train_images = train_images.take(run.num_train_examples)
    resize_small = eval_resize_small(spec, image_size)

    def eval_split(role):
        images = upscale_small_images(load_split(spec, role, run.data_dir), min_side)
        return distiller.make_eval_dataset(images, run.eval_batch_size, resize_small=resize_small)

    minival = eval_split("minival")
    _fit(distiller, lambda step: distiller.make_train_dataset(
        train_images, run.batch_size, initial_step=step, num_images=n_train), run, schedule)
    metrics = dict(_summary(run, schedule), eval=eval_text(spec, image_size),
                   minival=distiller.evaluate(minival, return_dict=True, verbose=0))
    metrics["test"] = distiller.evaluate(eval_split("test"), return_dict=True, verbose=0)
    save_model(distiller.student, os.path.join(run.workdir, "student.keras"))
    checkpointing.write_json(os.path.join(run.workdir, "metrics.json"), metrics)
    workdir_lock.release()
    return metrics


def _describe(run):
    out = {}
    for field in dataclasses.fields(run):
        value = getattr(run, field.name)
        out[field.name] = value if isinstance(value, (str, int, float, bool, dict, type(None))) \
            else getattr(value, "__name__", repr(value))
    return out


def eval_batches(examples, image_size, batch_size, resize_small=None):
    """(image, label) examples -> batched (``resize_small(R)|central_crop(S)`` view, label).

    The authors' evaluation (:func:`kdzoo.data.eval_preprocess`); ``resize_small``
    defaults to ``image_size`` (the central square, no resize beyond it).
    """
    import tensorflow as tf

    from kdzoo.data.pipeline import eval_preprocess
    r = image_size if resize_small is None else int(resize_small)
    return examples.map(lambda image, label: (eval_preprocess(image, image_size, r), label),
                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
                        ).batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass
class SupervisedRun:
    """Training on labels: a plain network, a self-distilled one, or deep supervision.

    ``model``: callable returning the network (a zoo backbone). ``method``:
    ``"labels"`` (plain CE; with ``mixup_alpha`` the paper's "fine-tune with
    mixup" baseline), ``"self_distillation"`` or ``"deep_supervision"``
    (``kdzoo.SelfDistillation`` over the backbone's stages). ``optimizer``:
    callable ``total_steps -> keras optimizer``.
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
    mixup_alpha: float | None = None
    alpha: float = 0.3
    temperature: float = 3.0
    feature_weight: float = 0.03
    data_dir: str | None = None
    strategy: str = "auto"
    mixed_precision: str | None = None
    jit_compile: object = "auto"
    seed: int = 0
    deterministic: bool = False
    log_every_steps: int = 500
    checkpoint_every_steps: int = 5000
    checkpoint_every_minutes: float | None = 30.0
    keep_checkpoints: int = 3
    num_train_examples: int | None = None
    eval_batch_size: int = 256
    verbose: object = "auto"
    params: dict = dataclasses.field(default_factory=dict)
    overwrite: bool = False  # delete what workdir holds and start over (kdzoo.run_dir)


METHODS = ("labels", "self_distillation", "deep_supervision")


def run_supervised(run):
    """Train ``run.model()`` on labels by ``run.method``; returns the metrics dict."""
    from kdzoo.data import get_spec, load_split, num_examples

    if run.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {run.method!r}.")
    spec = get_spec(run.dataset)
    size = run.image_size or spec.input_size
    set_precision(run.mixed_precision)
    seed_everything(run.seed, run.deterministic)
    strategy = get_strategy(run.strategy)
    split_batch(run.batch_size, strategy)
    # One workdir = one run: lock it for the run's life, record / compare its settings.
    workdir_lock = run_dir.claim(run.workdir, run_dir.settings_of(run),
                                 overwrite=run.overwrite, worker=worker_subdir())
    n_train = run.num_train_examples or num_examples(spec, "train", run.data_dir)
    schedule, _ = plan(run, n_train)
    steps = schedule.total_steps
    with strategy.scope():
        network = run.model()
        if run.method == "labels":
            model = network
            loss = (keras.losses.CategoricalCrossentropy(from_logits=True) if run.mixup_alpha
                    else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            metric = (keras.metrics.CategoricalAccuracy(name="accuracy") if run.mixup_alpha
                      else keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
            model.compile(optimizer=run.optimizer(steps), loss=loss,
                          metrics=[metric], jit_compile=run.jit_compile)
        else:
            from kdzoo.distill.self_distill import SelfDistillation
            model = SelfDistillation(network, num_classes=spec.num_classes, alpha=run.alpha,
                                     temperature=run.temperature,
                                     feature_weight=run.feature_weight, mode=run.method)
            model.compile(optimizer=run.optimizer(steps),
                          jit_compile=run.jit_compile)
    train = load_split(spec, "train", run.data_dir)
    if run.num_train_examples:
        train = train.take(run.num_train_examples)
    _fit(model, lambda step: labeled_stream(
        train, num_classes=spec.num_classes, image_size=size, batch_size=run.batch_size,
        seed=run.seed, initial_step=step, crop=run.crop, flip=run.flip,
        mixup_alpha=run.mixup_alpha, num_examples=n_train), run, schedule)
    metrics = dict(_summary(run, schedule), method=run.method, eval=eval_text(spec, size))
    for role in ("minival", "test"):
        batches = eval_batches(load_split(spec, role, run.data_dir), size, run.eval_batch_size,
                               eval_resize_small(spec, size))
        if run.method == "labels" and run.mixup_alpha:
            batches = batches.map(lambda x, y: (x, keras.ops.one_hot(y, spec.num_classes)))
        metrics[role] = model.evaluate(batches, return_dict=True, verbose=0)
    save_model(model, os.path.join(run.workdir, "model.keras"))
    checkpointing.write_json(os.path.join(run.workdir, "metrics.json"), metrics)
    workdir_lock.release()
    return metrics
