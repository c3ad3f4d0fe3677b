"""The one runner every recipe calls: strategy, models, compile, resumable fit, metrics.

A run lives in a work directory::

    workdir/checkpoints/   ckpt-EEEEEE.weights.h5 + state.json (see kdzoo.checkpointing)
    workdir/logs/          TensorBoard
    workdir/config.json    what was run
    workdir/metrics.json   final minival/test metrics (written last, atomically)
    workdir/student.keras  the trained student / network, a plain keras.Model

Rerunning the same command after a kill resumes from the last checkpoint; the
training stream is a pure function of (seed, epoch), so the resumed run sees
exactly the batches the uninterrupted one would have.
"""

import dataclasses
import numbers
import os

import keras

from kdzoo import checkpointing
from kdzoo.atomic import save_model
from kdzoo.distribute import get_strategy, split_batch, worker_subdir
from kdzoo.precision import resolve_precision


def upscale_small_images(dataset, min_side):
    """Upscale (image, label) examples whose shorter side is below ``min_side``.

    The paper's crops resize to the model's size anyway; this only makes the
    rare tiny image (and TFDS mock data) usable instead of an error mid-run.
    """
    import tensorflow as tf

    def fix(image, label):
        hw = tf.shape(image)[:2]
        short = tf.minimum(hw[0], hw[1])
        scale = tf.maximum(1.0, tf.cast(min_side, tf.float32) / tf.cast(short, tf.float32))
        size = tf.cast(tf.math.ceil(tf.cast(hw, tf.float32) * scale), tf.int32)
        resized = tf.image.resize(image, size, method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), image.dtype), label

    return dataset.map(fix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
                  validation_data=None, checkpoint_every=1, callbacks=(), verbose="auto"):
    """``model.fit`` that resumes from ``workdir/checkpoints`` and checkpoints atomically.

    ``make_train(initial_epoch)`` returns the training data from that epoch on
    (deterministic in the epoch). Returns the number of epochs trained now.
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
                     checkpointing.ResumableCheckpoint(os.path.join(own, "checkpoints"),
                                                       every=checkpoint_every),
                     keras.callbacks.TensorBoard(os.path.join(own, "logs")),
                     keras.callbacks.CSVLogger(os.path.join(own, "history.csv"), append=True),
                     *callbacks]
    model.fit(make_train(initial_epoch), epochs=epochs, initial_epoch=initial_epoch,
              steps_per_epoch=steps_per_epoch, validation_data=validation_data,
              callbacks=all_callbacks, verbose=verbose)
    return epochs - initial_epoch


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
    checkpoint_every: int = 1
    num_train_examples: int | None = None  # None: all of the train split (from its info)
    eval_batch_size: int = 256
    verbose: object = "auto"
    params: dict = dataclasses.field(default_factory=dict)  # grid values, for the summary
    distiller_kwargs: dict = dataclasses.field(default_factory=dict)  # e.g. mixup_alpha


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
    os.makedirs(run.workdir, exist_ok=True)
    checkpointing.write_json(os.path.join(run.workdir, "config.json"), _describe(run))
    train_source = run.distill_dataset or run.dataset
    # One Keras epoch is one pass over the train split: the stream of epoch e is a
    # pure function of (seed, e), which is what makes resuming exact.
    n_train = run.num_train_examples or num_examples(train_source, "train", run.data_dir)
    steps = max(1, n_train // run.batch_size)
    total_steps = steps * run.epochs
    with strategy.scope():
        distiller = FunMatchDistiller(
            run.teacher(), run.student(), variant=run.variant, temperature=run.temperature,
            image_size=image_size, teacher_image_size=run.teacher_image_size, seed=run.seed,
            **run.distiller_kwargs)
        distiller.compile(
            optimizer=paper_optimizer(run.lr, total_steps,
                                      min(run.warmup_steps, total_steps - 1),
                                      run.weight_decay),
            jit_compile=run.jit_compile)
    min_side = max(image_size, run.teacher_image_size or 0)
    train_images = upscale_small_images(load_split(train_source, "train", run.data_dir), min_side)
    if run.num_train_examples:
        train_images = train_images.take(run.num_train_examples)

    def eval_split(role):
        images = upscale_small_images(load_split(spec, role, run.data_dir), min_side)
        return distiller.make_eval_dataset(images, run.eval_batch_size)

    minival = eval_split("minival")
    fit_resumable(distiller,
                  lambda e: distiller.make_train_dataset(train_images, run.batch_size, e),
                  workdir=run.workdir, epochs=run.epochs, steps_per_epoch=steps,
                  checkpoint_every=run.checkpoint_every, verbose=run.verbose)
    metrics = {"params": run.params, "epochs": run.epochs, "steps_per_epoch": steps,
               "minival": distiller.evaluate(minival, return_dict=True, verbose=0)}
    metrics["test"] = distiller.evaluate(eval_split("test"), return_dict=True, verbose=0)
    save_model(distiller.student, os.path.join(run.workdir, "student.keras"))
    checkpointing.write_json(os.path.join(run.workdir, "metrics.json"), metrics)
    return metrics


def _describe(run):
    out = {}
    for field in dataclasses.fields(run):
        value = getattr(run, field.name)
        out[field.name] = value if isinstance(value, (str, int, float, bool, dict, type(None))) \
            else getattr(value, "__name__", repr(value))
    return out


def labeled_stream(examples, *, num_classes, image_size, batch_size, seed, initial_epoch=0,
                   crop="random", flip=True, mixup_alpha=None, shuffle_buffer=10_000,
                   num_examples=None):
    """(image, label) examples -> endless batched (views, labels), epoch e keyed by (seed, e).

    ``crop``: ``"pad"`` (pad by 1/8 of the size, random crop: the CIFAR recipe),
    ``"random"`` (the paper's mild random crop), ``"inception"`` or ``None``
    (resize the whole image). With ``mixup_alpha`` the labels become mixed
    one-hot vectors (the paper's "fine-tune with mixup" baseline).
    """
    import tensorflow as tf

    from kdzoo.data import augment

    crops = ("pad", "random", "inception", None)
    if crop not in crops:
        raise ValueError(f"crop must be one of {crops}, got {crop!r}.")
    for name, value in (("batch_size", batch_size), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    base = examples.enumerate()

    def view(epoch):
        def fn(index, example):
            image, label = example
            key = augment.make_key(seed, epoch, index)
            if crop == "pad":
                pad = max(1, image_size // 8)
                image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
                box = augment.random_crop_box(image, key, fraction=image_size / (image_size + 2 * pad))
            elif crop == "random":
                box = augment.random_crop_box(image, key)
            elif crop == "inception":
                box = augment.inception_crop_box(image, key)
            elif crop is None:
                box = augment.full_box(image)
            else:
                raise ValueError(f"crop must be 'pad', 'random', 'inception' or None, got {crop!r}.")
            out = augment.crop_resize(image, box, image_size)
            if flip:
                out = augment.random_flip(out, augment.make_key(key, augment.STUDENT_FLIP))
            return out, tf.cast(label, tf.int32)
        return fn

    def one_epoch(epoch):
        ds = base
        if shuffle_buffer and shuffle_buffer > 1:
            ds = ds.shuffle(shuffle_buffer, seed=augment.make_key(seed, augment.SHUFFLE, epoch)[0],
                            reshuffle_each_iteration=False)
        ds = ds.map(view(epoch), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True)
        if mixup_alpha:
            def mix(step, batch):
                images, labels = batch
                onehot = tf.one_hot(labels, num_classes)
                (images, onehot), _ = augment.mixup(
                    (images, onehot), augment.make_key(seed, augment.MIXUP, epoch, step), mixup_alpha)
                return images, onehot
            ds = ds.enumerate().map(mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds

    stream = tf.data.Dataset.counter(start=int(initial_epoch)).flat_map(one_epoch)
    return stream.prefetch(tf.data.AUTOTUNE)


def eval_batches(examples, image_size, batch_size):
    """(image, label) examples -> batched (whole image resized to image_size, label)."""
    import tensorflow as tf

    from kdzoo.data import augment
    return examples.map(lambda image, label: (augment.resize(image, image_size), label),
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
    checkpoint_every: int = 1
    num_train_examples: int | None = None
    eval_batch_size: int = 256
    verbose: object = "auto"
    params: dict = dataclasses.field(default_factory=dict)


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
    os.makedirs(run.workdir, exist_ok=True)
    checkpointing.write_json(os.path.join(run.workdir, "config.json"), _describe(run))
    n_train = run.num_train_examples or num_examples(spec, "train", run.data_dir)
    steps = max(1, n_train // run.batch_size)
    with strategy.scope():
        network = run.model()
        if run.method == "labels":
            model = network
            loss = (keras.losses.CategoricalCrossentropy(from_logits=True) if run.mixup_alpha
                    else keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            metric = (keras.metrics.CategoricalAccuracy(name="accuracy") if run.mixup_alpha
                      else keras.metrics.SparseCategoricalAccuracy(name="accuracy"))
            model.compile(optimizer=run.optimizer(steps * run.epochs), loss=loss,
                          metrics=[metric], jit_compile=run.jit_compile)
        else:
            from kdzoo.distill.self_distill import SelfDistillation
            model = SelfDistillation(network, num_classes=spec.num_classes, alpha=run.alpha,
                                     temperature=run.temperature,
                                     feature_weight=run.feature_weight, mode=run.method)
            model.compile(optimizer=run.optimizer(steps * run.epochs),
                          jit_compile=run.jit_compile)
    train = load_split(spec, "train", run.data_dir)
    if run.num_train_examples:
        train = train.take(run.num_train_examples)
    fit_resumable(model, lambda e: labeled_stream(
        train, num_classes=spec.num_classes, image_size=size, batch_size=run.batch_size,
        seed=run.seed, initial_epoch=e, crop=run.crop, flip=run.flip,
        mixup_alpha=run.mixup_alpha), workdir=run.workdir, epochs=run.epochs,
        steps_per_epoch=steps, checkpoint_every=run.checkpoint_every, verbose=run.verbose)
    metrics = {"params": run.params, "epochs": run.epochs, "steps_per_epoch": steps,
               "method": run.method}
    for role in ("minival", "test"):
        batches = eval_batches(load_split(spec, role, run.data_dir), size, run.eval_batch_size)
        if run.method == "labels" and run.mixup_alpha:
            batches = batches.map(lambda x, y: (x, keras.ops.one_hot(y, spec.num_classes)))
        metrics[role] = model.evaluate(batches, return_dict=True, verbose=0)
    save_model(model, os.path.join(run.workdir, "model.keras"))
    checkpointing.write_json(os.path.join(run.workdir, "metrics.json"), metrics)
    return metrics
