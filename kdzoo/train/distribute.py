"""``tf.distribute`` strategy selection for kdzoo runners.

Names (the ``--strategy`` flag of every recipe):

``auto``
    The first that applies: a TPU (``TPU_NAME`` set, or a TPU VM's
    ``/dev/accel*`` / ``/dev/vfio`` devices, or TPU devices visible to TF) ->
    :class:`~tf.distribute.TPUStrategy`; ``TF_CONFIG`` with a cluster ->
    :class:`~tf.distribute.MultiWorkerMirroredStrategy`; two or more GPUs ->
    :class:`~tf.distribute.MirroredStrategy` over all of them; otherwise the
    default strategy. With exactly one GPU the default strategy is used: it
    already places every op on that GPU, and ``OneDeviceStrategy`` would only
    add a distribution layer (name ``one_device`` explicitly if you want it).
``default``
    ``tf.distribute.get_strategy()`` (no distribution).
``mirrored``
    ``MirroredStrategy`` over all GPUs, or, where there is none, over all
    logical CPU devices (see :func:`configure_logical_cpus`), so the same code
    path can be tested on a CPU-only machine.
``multi_worker``
    ``MultiWorkerMirroredStrategy`` (cluster from ``TF_CONFIG``; a single local
    worker without it).
``tpu``
    ``TPUStrategy`` on ``$TPU_NAME`` (or the local TPU VM); an error without a TPU.
``one_device``
    ``OneDeviceStrategy`` on the first GPU, else on the CPU.

All functions are silent (library code never prints).
"""

import difflib
import glob
import json
import numbers
import os

import tensorflow as tf

__all__ = ["STRATEGY_NAMES", "get_strategy", "split_batch", "configure_logical_cpus",
           "tf_config_cluster", "tpu_present", "patch_keras_multi_worker_fit"]

STRATEGY_NAMES = ("auto", "default", "mirrored", "multi_worker", "tpu", "one_device")


def _tf_config():
    """``$TF_CONFIG`` as a dict (``{}`` when unset or empty)."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e


def tf_config_cluster():
    """The ``cluster`` dict of ``$TF_CONFIG`` (``{}`` when unset or empty)."""
    return dict(_tf_config().get("cluster") or {})


def worker_subdir():
    """``None`` for the process that writes a run's files (chief, or single process),
    else ``"worker-<i>"``: other workers keep their logs and checkpoints apart so two
    processes never write the same file."""
    config = _tf_config()
    task = config.get("task") or {}
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief") or (kind == "worker" and index == 0
                                    and "chief" not in (config.get("cluster") or {})):
        return None
    return f"{kind}-{index}"


def tpu_present():
    """Whether a TPU looks reachable, without touching the network or
    initialising the TensorFlow runtime."""
    if os.environ.get("TPU_NAME"):
        return True
    if glob.glob("/dev/accel*") or (os.path.isdir("/dev/vfio")
                                     and os.environ.get("TPU_ACCELERATOR_TYPE")):
        return True
    # Physical, not logical, devices: listing logical ones would initialise the
    # runtime, after which MultiWorkerMirroredStrategy can no longer be created.
    return bool(tf.config.list_physical_devices("TPU"))


def _tpu_strategy():
    tpu = os.environ.get("TPU_NAME") or "local"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise RuntimeError(f"strategy 'tpu' was requested but no TPU could be initialised "
                           f"(TPU_NAME={os.environ.get('TPU_NAME')!r}): {e}") from e
    return tf.distribute.TPUStrategy(resolver)


def _gpus():
    return tf.config.list_logical_devices("GPU")


def get_strategy(name="auto"):
    """A ``tf.distribute.Strategy`` by name (see the module doc for the names).

    A ``tf.distribute.Strategy`` instance passes through unchanged.
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    key = str(name).strip().lower().replace("-", "_")
    key = {"multiworker": "multi_worker", "multi_worker_mirrored": "multi_worker",
           "onedevice": "one_device"}.get(key, key)
    if key not in STRATEGY_NAMES:
        close = difflib.get_close_matches(key, STRATEGY_NAMES, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown strategy {name!r}.{hint} Choose one of "
                         f"{', '.join(STRATEGY_NAMES)}.")
    if key == "auto":
        if tpu_present():
            return _tpu_strategy()
        cluster = tf_config_cluster()
        if cluster.get("worker") or cluster.get("chief"):
            return _multi_worker()
        if len(_gpus()) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if key == "default":
        return tf.distribute.get_strategy()
    if key == "mirrored":
        gpus = _gpus()
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if key == "multi_worker":
        return _multi_worker()
    if key == "tpu":
        return _tpu_strategy()
    gpus = _gpus()
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def _multi_worker():
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    patch_keras_multi_worker_fit()
    return strategy


_PATCHED = False


def patch_keras_multi_worker_fit():
    """Make ``keras.Model.fit`` / ``evaluate`` work under ``MultiWorkerMirroredStrategy``.

    Keras 3's TensorFlow trainer (3.x up to at least 3.15) fails with more than
    one worker (keras-team/keras#20585), in two places:

    1. a model created under a strategy is built from the first batch by
       ``strategy.reduce("MEAN", (x, y))``; the collective reduce rejects the
       nested structure ("Attempt to convert a value (PerReplica...)").
       Building needs only shapes and dtypes, so the patch builds from this
       worker's first local replica batch (no cross-worker communication);
    2. every step's logs (scalar losses and metrics) are averaged with
       ``strategy.reduce("MEAN", v, axis=0)``, which is invalid for scalars
       ("Invalid reduction dimension 0 for input with 0 dimensions"). The patch
       averages scalars with ``axis=None`` (the same all-reduce mean over the
       replicas) and leaves every other case to Keras.

    Nothing changes for other strategies. :func:`get_strategy` applies the
    patch whenever it returns a ``MultiWorkerMirroredStrategy``; calling it
    again is a no-op. Returns whether the patch is in place.
    """
    global _PATCHED
    if _PATCHED:
        return True
    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer as tf_trainer
    except ImportError:  # another backend or a Keras without this trainer
        return False
    original_build = getattr(tf_trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    original_reduce = getattr(tf_trainer, "reduce_per_replica", None)
    if original_build is None or original_reduce is None:
        return False

    def is_multi_worker(strategy):
        return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode())

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not is_multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda v: (strategy.experimental_local_results(v)[0]
                           if isinstance(v, tf.distribute.DistributedValues) else v),
                batch)
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
            return original_reduce(values, strategy, reduction)

        def _reduce(v):
            rank = v.shape.rank if hasattr(v, "shape") else None
            if rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return original_reduce(v, strategy, reduction)

        return tree.map_structure(_reduce, values)

    _maybe_symbolic_build.__doc__ = original_build.__doc__
    reduce_per_replica.__doc__ = original_reduce.__doc__
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _PATCHED = True
    return True


def split_batch(global_batch, strategy=None):
    """Per-replica batch size of ``global_batch`` under ``strategy`` (a strategy,
    a replica count, or ``None`` for the current strategy)."""
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    replicas = strategy if isinstance(strategy, int) else strategy.num_replicas_in_sync
    for what, value in (("global batch size", global_batch), ("replica count", replicas)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"The {what} must be an int, got {value!r} "
                            f"({type(value).__name__}); e.g. split_batch(512, strategy).")
    global_batch, replicas = int(global_batch), int(replicas)
    if global_batch <= 0 or replicas <= 0:
        raise ValueError(f"global batch ({global_batch}) and replicas ({replicas}) "
                         "must be positive.")
    if global_batch % replicas:
        lower = global_batch - global_batch % replicas
        raise ValueError(
            f"Global batch size {global_batch} is not divisible by the {replicas} "
            f"replicas in sync; use a multiple of {replicas} (e.g. {lower or replicas} "
            f"or {lower + replicas}).")
    return global_batch // replicas


def configure_logical_cpus(n):
    """Split the host CPU into ``n`` logical devices (for testing ``mirrored``
    on a machine without GPUs).

    Must run before TensorFlow initialises its devices (before the first op,
    strategy or ``list_logical_devices`` call). Calling it again with the same
    ``n`` is a no-op; anything else after initialisation raises RuntimeError.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == n:
            return
        raise RuntimeError(
            f"configure_logical_cpus({n}) must run before TensorFlow initialises its "
            f"devices, but they are already initialised ({have} logical CPU(s)). Call "
            "it at program start, before any TensorFlow op, strategy or model.") from e
