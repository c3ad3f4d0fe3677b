"""Input pipelines: one dataset split as ``(image uint8 [H, W, C], label int32)``.

``load_split`` is the single reader every kdzoo runner uses, for TFDS datasets
and for the embedded Fashion-MNIST alike:

* **parallel decode**: only the image and label features are parsed
  (``tfds.decode.PartialDecoding``: pets' masks and boxes are never read), images
  are read still encoded (``tfds.decode.SkipDecoding``)
  and decoded by the TFDS image feature in a parallel, order-preserving
  ``map``; TFDS interleaves the record files in parallel.
* **caching**: decoded images are kept in host memory (``Dataset.cache()``)
  only where :attr:`DatasetSpec.cache_in_memory` says so (small sets that run
  for thousands of epochs); ``cache=`` overrides it per call.
* **shuffling**: deterministic given ``seed``. The order changes every epoch
  (``reshuffle_each_iteration``) but the sequence of epoch orders is the same
  in every run with the same seed. Big sets shuffle the *encoded* records
  before decoding, with the authors' buffer (:attr:`DatasetSpec.shuffle_buffer`:
  50k for food101 / sun397, 250k JPEG byte strings for ImageNet, about 27 GB
  per input pipeline, as in big_vision; ``shuffle_buffer=`` lowers it); cached sets
  shuffle the decoded cache with a buffer as large as the split (a full
  shuffle).
* **sharding** under ``tf.distribute``: pass the ``tf.distribute.InputContext``
  that ``strategy.distribute_datasets_from_function`` hands you. Where the split
  has at least as many record files as input pipelines, whole files are
  assigned to pipelines through ``tfds.ReadConfig(input_context=...)`` (each
  worker reads only its files); otherwise (e.g. flowers102's single train
  file, or mocked data) every pipeline reads the encoded records and keeps
  every ``num_input_pipelines``-th one, *before* decoding, so no pipeline
  decodes another's images. Either way the shards are disjoint and their
  union is the split.
* **missing data** raises :class:`DatasetNotFoundError` naming the data
  directory and saying how to download the dataset or where to put manual files.

Evaluation follows the paper: ``resize_small(eval_resize_small)`` (shorter side,
area interpolation, like big_vision) then ``central_crop(input_size)``. Outputs
stay float32 in [0, 255]: kdzoo models rescale their inputs themselves.
"""

import numbers
import os

import tensorflow as tf

from kdzoo.data.specs import DatasetSpec, get_spec, split_ranges, split_size
from kdzoo.errors import DatasetNotFoundError  # noqa: F401  (raised here, public here)

__all__ = ["DatasetNotFoundError", "load_split", "eval_preprocess", "make_eval_dataset",
           "require_prepared", "upscale_small_images",
           "num_examples", "tfds_builder"]

AUTOTUNE = tf.data.AUTOTUNE
# Upper bound on the shuffle buffer of cached sets (a full shuffle below it).
MAX_CACHED_SHUFFLE_BUFFER = 100_000


def _not_found(spec, data_dir, detail=None):
    where = data_dir or _default_data_dir()
    what = spec.tfds_full_name or spec.name
    msg = f"Dataset {spec.name!r} ({what}) was not found in data_dir={where!r}. "
    msg += spec.how_to_get(where)
    if detail:
        msg += f" ({detail})"
    return DatasetNotFoundError(msg)


def _default_data_dir():
    try:
        import tensorflow_datasets as tfds
        return tfds.core.constants.DATA_DIR
    except Exception:  # pragma: no cover - very old/new TFDS layouts
        return os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")


def tfds_builder(spec_or_name, data_dir=None):
    """The TFDS builder of a spec (no download, no network)."""
    import tensorflow_datasets as tfds

    from kdzoo.data.quiet import silence_known_warnings
    silence_known_warnings()
    spec = get_spec(spec_or_name)
    if spec.tfds_name is None:
        raise ValueError(f"Dataset {spec.name!r} does not come from TFDS "
                         f"(source={spec.source!r}); read it with "
                         f"kdzoo.data.load_split({spec.name!r}, role).")
    kwargs = {"data_dir": os.path.expanduser(data_dir)} if data_dir else {}
    if spec.tfds_config:
        kwargs["config"] = spec.tfds_config
    try:
        return tfds.builder(spec.tfds_name, **kwargs)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise ValueError(f"TFDS does not know the builder {spec.tfds_full_name!r} "
                         f"(tensorflow-datasets too old?): {e}") from e


def _num_files(builder, split):
    """Record files the split reads, or None when unknown (no metadata, mocks)."""
    try:
        return len(builder.info.splits[split].file_instructions)
    except Exception:
        return None


def num_examples(spec_or_name, role, data_dir=None):
    """Examples in ``role``'s split: from the prepared TFDS dataset's info where
    available, else from the TFDS catalog sizes stored in the spec."""
    spec = get_spec(spec_or_name)
    split = spec.split(role)
    if spec.source == "tfds":
        try:
            n = tfds_builder(spec, data_dir).info.splits[split].num_examples
            if n:
                return int(n)
        except Exception:
            pass
    return split_size(spec, role)


def _num_pipelines(input_context):
    if input_context is None:
        return 1, 0
    return int(input_context.num_input_pipelines), int(input_context.input_pipeline_id)


def _read_tfds(spec, split, data_dir, shuffle, seed, input_context, reshuffle):
    """Encoded records ``(image bytes, label int32)``, sharded; and the decode fn."""
    import tensorflow_datasets as tfds
    builder = tfds_builder(spec, data_dir)
    n_pipes, pipe_id = _num_pipelines(input_context)
    n_files = _num_files(builder, split)
    file_sharding = n_pipes > 1 and n_files is not None and n_files >= n_pipes
    read_config = tfds.ReadConfig(
        shuffle_seed=seed if shuffle else None,
        shuffle_reshuffle_each_iteration=reshuffle if shuffle else None,
        input_context=input_context if file_sharding else None,
        try_autocache=False,  # kdzoo decides about caching (decoded images).
        skip_prefetch=True,
        num_parallel_calls_for_decode=AUTOTUNE,
    )
    try:
        ds = builder.as_dataset(
            split=split, shuffle_files=bool(shuffle), read_config=read_config,
            # Parse only image + label (pets also stores masks, boxes, ...) and
            # keep the image encoded until kdzoo's own parallel decode.
            decoders=tfds.decode.PartialDecoding(
                {spec.image_key: True, spec.label_key: True},
                decoders={spec.image_key: tfds.decode.SkipDecoding()}))
    except AssertionError as e:  # TFDS: "could not find data in ..."
        raise _not_found(spec, data_dir, str(e).split(".")[0]) from e
    image_key, label_key = spec.image_key, spec.label_key
    ds = ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    if n_pipes > 1 and not file_sharding:
        ds = ds.shard(n_pipes, pipe_id)
    image_feature = builder.info.features[image_key]
    channels = spec.channels

    def decode(encoded, label):
        image = image_feature.decode_example(encoded)
        image = tf.ensure_shape(image, [None, None, channels])
        return tf.cast(image, tf.uint8), label

    return ds, decode


def _read_fashion_mnist(spec, split, data_dir, input_context):
    from kdzoo.data import fashion_mnist
    idx_dir = None
    if data_dir and os.path.exists(os.path.join(os.path.expanduser(data_dir),
                                                "train-images-idx3-ubyte.gz")):
        idx_dir = os.path.expanduser(data_dir)
    arrays = {}
    images, labels = [], []
    try:
        for base, start, stop in split_ranges(split, spec.base_split_sizes):
            if base not in arrays:
                arrays[base] = fashion_mnist.load(base, data_dir=idx_dir)
            x, y = arrays[base]
            images.append(x[start:stop])
            labels.append(y[start:stop])
    except FileNotFoundError as e:
        raise _not_found(spec, idx_dir or fashion_mnist.DEBIAN_DIR, str(e)) from e
    import numpy as np
    ds = tf.data.Dataset.from_tensor_slices(
        (np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int32)))
    n_pipes, pipe_id = _num_pipelines(input_context)
    if n_pipes > 1:
        ds = ds.shard(n_pipes, pipe_id)
    return ds, None


def load_split(spec_or_name, role, data_dir=None, *, shuffle=False, seed=0,
               input_context=None, cache=None, shuffle_buffer=None,
               reshuffle_each_iteration=True, shuffle_files=False):
    """One split as a ``tf.data.Dataset`` of ``(image uint8 [H, W, C], label int32)``.

    Args:
      spec_or_name: a :class:`DatasetSpec` or a name for :func:`get_spec`.
      role: ``"train"``, ``"minival"`` or ``"test"`` (the spec maps it to a split).
      data_dir: TFDS data directory (default: TFDS's, ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``). For ``fashion_mnist`` it is used only when it
        holds the four IDX ``.gz`` files; otherwise the Debian location is read.
      shuffle: shuffle files and examples, deterministically given ``seed``.
      seed: shuffle seed.
      input_context: a ``tf.distribute.InputContext``; the result is then this
        input pipeline's shard (disjoint from the other pipelines').
      cache: cache decoded images in memory; ``None`` follows
        ``spec.cache_in_memory``.
      shuffle_buffer: override the shuffle buffer size (default: the spec's for
        streamed sets, the whole split for cached ones).
      reshuffle_each_iteration: a new (still seed-determined) order every epoch.
      shuffle_files: read a TFDS split's record files in a ``seed``-determined order
        even with ``shuffle=False`` (no example shuffle then): the FunMatch runner's
        read of a streamed set, whose examples its own per-epoch stream shuffles.

    Images keep their stored size (batch them only after cropping/resizing).
    Raises :class:`DatasetNotFoundError` when the dataset is not prepared.
    """
    spec = get_spec(spec_or_name)
    split = spec.split(role)
    cache = spec.cache_in_memory if cache is None else bool(cache)
    seed = int(seed)
    if spec.source == "fashion_mnist":
        ds, decode = _read_fashion_mnist(spec, split, data_dir, input_context)
    elif spec.source == "tfds":
        ds, decode = _read_tfds(spec, split, data_dir, shuffle or shuffle_files, seed,
                                input_context,
                                reshuffle_each_iteration)
    else:
        raise ValueError(f"Unknown dataset source {spec.source!r} for {spec.name!r}.")

    def shuffled(ds, buffer):
        return ds.shuffle(shuffle_buffer or buffer, seed=seed,
                          reshuffle_each_iteration=reshuffle_each_iteration)

    if cache:
        if decode is not None:
            ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = pad_to_square(ds, spec.pad_to).cache()
        if shuffle:
            n_pipes, _ = _num_pipelines(input_context)
            total = num_examples(spec, role, data_dir)
            ds = shuffled(ds, max(1, min(MAX_CACHED_SHUFFLE_BUFFER, -(-total // n_pipes))))
    else:
        if shuffle:
            ds = shuffled(ds, spec.shuffle_buffer)
        if decode is not None:
            ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
        ds = pad_to_square(ds, spec.pad_to)
    return ds


def pad_to_square(examples, side):
    """(image, label) examples zero-padded, centred, to ``side`` x ``side`` (``None``: as is).

    A spec's ``pad_to`` (``fashion_mnist_32``): the extra row / column of an odd
    difference goes to the bottom / right. A larger image raises when read.
    """
    if side is None:
        return examples

    def pad(image, label):
        return tf.image.pad_to_bounding_box(
            image, (side - tf.shape(image)[0]) // 2, (side - tf.shape(image)[1]) // 2,
            side, side), label

    return examples.map(pad, num_parallel_calls=AUTOTUNE, deterministic=True)


def eval_preprocess(image, size, resize_small=None, method="area"):
    """Paper evaluation view: shorter side resized to ``resize_small`` (sizes
    rounded like big_vision's ``resize_small``), then the central ``size`` x
    ``size`` crop. Returns float32 ``[size, size, C]`` in [0, 255].

    ``resize_small=None`` (or equal to the shorter side) skips the resize.
    """
    resize_small = size if resize_small is None else int(resize_small)
    if resize_small < size:
        raise ValueError(f"resize_small ({resize_small}) must be >= size ({size}).")
    image = tf.convert_to_tensor(image)
    channels = image.shape[-1]
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    ratio = tf.cast(resize_small, tf.float32) / tf.cast(tf.minimum(h, w), tf.float32)
    nh = tf.cast(tf.round(tf.cast(h, tf.float32) * ratio), tf.int32)
    nw = tf.cast(tf.round(tf.cast(w, tf.float32) * ratio), tf.int32)
    image = tf.cast(image, tf.float32)
    image = tf.cond(
        tf.logical_and(tf.equal(nh, h), tf.equal(nw, w)),
        lambda: image,
        lambda: tf.cast(tf.image.resize(image, tf.stack([nh, nw]), method=method),
                        tf.float32))
    dy = (nh - size) // 2
    dx = (nw - size) // 2
    image = image[dy:dy + size, dx:dx + size]
    image = tf.ensure_shape(image, [size, size, channels])
    return tf.clip_by_value(image, 0.0, 255.0)


def make_eval_dataset(spec_or_name, role="test", data_dir=None, *, batch_size,
                      input_context=None, drop_remainder=False, size=None,
                      resize_small=None, cache=None):
    """Batched, prefetched evaluation data: ``(float32 [B, size, size, C] in
    [0, 255], int32 [B])`` in the split's order.

    ``size``/``resize_small`` default to the spec's ``input_size`` and
    ``eval_resize_small``. ``batch_size`` is the batch of *this* pipeline: under
    ``distribute_datasets_from_function`` pass
    ``input_context.get_per_replica_batch_size(global_batch)``.
    """
    spec = get_spec(spec_or_name)
    if (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int (examples per batch of this "
                         f"input pipeline), got {batch_size!r}.")
    size = spec.input_size if size is None else int(size)
    resize_small = spec.eval_resize_small if resize_small is None else int(resize_small)
    ds = load_split(spec, role, data_dir, shuffle=False, input_context=input_context,
                    cache=cache)
    ds = ds.map(lambda x, y: (eval_preprocess(x, size, resize_small), y),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder,
                  num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def upscale_small_images(dataset, min_side):
    """Upscale (image, label) examples whose shorter side is below ``min_side``.

    The paper's crops resize to the model's size anyway; this only makes the
    rare tiny image (and TFDS mock data) usable instead of an error mid-run.
    """
    def fix(image, label):
        hw = tf.shape(image)[:2]
        short = tf.minimum(hw[0], hw[1])
        scale = tf.maximum(1.0, tf.cast(min_side, tf.float32) / tf.cast(short, tf.float32))
        size = tf.cast(tf.math.ceil(tf.cast(hw, tf.float32) * scale), tf.int32)
        resized = tf.image.resize(image, size, method="bilinear")
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), image.dtype), label

    return dataset.map(fix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def require_prepared(spec_or_name, data_dir=None):
    """Raise :class:`DatasetNotFoundError` (saying how to get it) unless the dataset is ready.

    Cheap and offline: reads only the TFDS metadata in ``data_dir``. Recipes call it
    before anything is downloaded (a 900 MB teacher is no use without the data).
    """
    spec = get_spec(spec_or_name)
    if spec.source == "fashion_mnist":
        _read_fashion_mnist(spec, spec.split("test"), data_dir, None)
        return
    if not tfds_builder(spec, data_dir).is_prepared():
        raise _not_found(spec, data_dir)
