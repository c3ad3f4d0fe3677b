"""kdzoo.data: dataset specs, split arithmetic, load_split on mocked and on real
(locally generated) TFDS records, sharding, shuffling, caching, eval preprocessing."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import kdzoo.data as D
from kdzoo.data import pipeline
from reference.views import views_and_boxes

TFDS_SPECS = [n for n in D.list_datasets() if D.get_spec(n).source == "tfds"]


# --------------------------------------------------------------------- specs

def test_expected_datasets_and_paper_splits():
    assert set(TFDS_SPECS) == {"flowers102", "pets", "food101", "sun397", "imagenet2012",
                               "cifar100"}
    pets = D.get_spec("pets")
    assert (pets.tfds_name, pets.train_split, pets.minival_split, pets.test_split) == (
        "oxford_iiit_pet", "train[:90%]", "train[90%:]", "test")
    food = D.get_spec("food101")
    assert food.test_split == "validation"
    sun = D.get_spec("sun397")
    assert sun.tfds_config == "tfds" and not sun.has_supervised_keys
    inet = D.get_spec("imagenet2012")
    assert (inet.train_split, inet.minival_split, inet.input_size) == (
        "train[:98%]", "train[99%:]", 224)
    for n in ["flowers102", "pets", "food101", "sun397"]:
        s = D.get_spec(n)
        assert (s.input_size, s.eval_resize_small) == (128, 160)
    assert {n for n in D.list_datasets() if D.get_spec(n).cache_in_memory} == {
        "flowers102", "pets", "cifar100", "fashion_mnist", "fashion_mnist_32"}


def test_get_spec_aliases_and_did_you_mean():
    assert D.get_spec("oxford_iiit_pet") is D.get_spec("pets")
    assert D.get_spec("ImageNet") is D.get_spec("imagenet2012")
    assert D.get_spec(D.get_spec("pets")) is D.get_spec("pets")
    with pytest.raises(ValueError, match="Did you mean 'pets'"):
        D.get_spec("petz")
    with pytest.raises(ValueError, match="Known datasets"):
        D.get_spec("zzzzzz")
    with pytest.raises(ValueError, match="Did you mean 'minival'"):
        D.get_spec("pets").split("minivall")


@pytest.mark.parametrize("name", TFDS_SPECS)
def test_tfds_builder_matches_spec(name, tmp_path):
    spec = D.get_spec(name)
    builder = D.tfds_builder(spec, data_dir=str(tmp_path))  # offline, no data needed
    assert builder.name == spec.tfds_name
    if spec.tfds_config:
        assert builder.builder_config.name == spec.tfds_config
    features = builder.info.features
    assert spec.image_key in features and spec.label_key in features
    assert features[spec.label_key].num_classes == spec.num_classes
    assert features[spec.image_key].shape[-1] == spec.channels
    assert bool(builder.info.supervised_keys) == spec.has_supervised_keys
    if spec.manual_download:
        assert builder.MANUAL_DOWNLOAD_INSTRUCTIONS


@pytest.mark.parametrize("name", D.list_datasets())
def test_splits_parse_and_minival_is_disjoint_from_train(name):
    spec = D.get_spec(name)
    ranges = {r: D.split_ranges(spec.split(r), spec.base_split_sizes) for r in D.ROLES}
    for role, rs in ranges.items():
        for base, a, b in rs:
            assert base in spec.base_split_sizes
            assert 0 <= a < b <= spec.base_split_sizes[base], (role, base, a, b)

    def ids(rs):
        return {(base, i) for base, a, b in rs for i in range(a, b)}

    train, minival, test = (ids(ranges[r]) for r in D.ROLES)
    assert not train & minival and not train & test and not minival & test
    assert len(train) == D.split_size(spec, "train")
    assert abs(len(train) - spec.approx_train_size) <= 0.01 * spec.approx_train_size


def test_split_sizes_follow_tfds_rounding():
    assert D.split_size("pets", "train") == 3312 and D.split_size("pets", "minival") == 368
    assert D.split_size("imagenet2012", "minival") == 12812
    assert D.split_size("cifar100", "minival") == 1000
    assert D.split_size("fashion_mnist", "minival") == 5000
    assert D.split_size("food101", "test") == 25250


# ----------------------------------------------------------- mocked TFDS data

@pytest.mark.parametrize("name", TFDS_SPECS)
def test_load_split_on_mock_data(name, tmp_path):
    spec = D.get_spec(name)
    with tfds.testing.mock_data(num_examples=3):
        for role in D.ROLES:
            ds = D.load_split(spec, role, data_dir=str(tmp_path), shuffle=(role == "train"))
            assert ds.element_spec[0].dtype == tf.uint8
            assert ds.element_spec[1].dtype == tf.int32
            items = list(ds.as_numpy_iterator())
            assert len(items) == 3
            for image, label in items:
                assert image.dtype == np.uint8 and image.ndim == 3
                assert image.shape[-1] == spec.channels
                assert 0 <= label < spec.num_classes


def test_make_eval_dataset_on_mock_data():
    with tfds.testing.mock_data(num_examples=5):
        ds = D.make_eval_dataset("flowers102", "test", batch_size=2)
        batches = list(ds.as_numpy_iterator())
    assert [x.shape for x, _ in batches] == [(2, 128, 128, 3)] * 2 + [(1, 128, 128, 3)]
    for x, y in batches:
        assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 255
        assert y.dtype == np.int32
    # The mocked images are smaller than 128: the resize made them bigger.
    assert batches[0][0].std() > 0


def test_sharding_on_mock_data_is_disjoint():
    ctxs = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i)
            for i in range(2)]
    with tfds.testing.mock_data(num_examples=8):
        full = [x.tobytes() for x, _ in D.load_split("pets", "train").as_numpy_iterator()]
        halves = [[x.tobytes() for x, _ in
                   D.load_split("pets", "train", input_context=c).as_numpy_iterator()]
                  for c in ctxs]
    assert len(set(full)) == 8
    assert [len(h) for h in halves] == [4, 4]
    assert not set(halves[0]) & set(halves[1])
    assert sorted(halves[0] + halves[1]) == sorted(full)


def test_missing_dataset_error_says_how_to_get_it(tmp_path):
    data_dir = str(tmp_path / "empty")
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load_split("pets", "train", data_dir=data_dir)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert "tfds build oxford_iiit_pet" in msg and data_dir in msg
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.load_split("sun397", "test", data_dir=data_dir)
    assert "tfds build sun397/tfds" in str(err.value)
    with pytest.raises(D.DatasetNotFoundError) as err:
        D.make_eval_dataset("imagenet2012", "test", data_dir=data_dir, batch_size=8)
    msg = str(err.value)
    for expected in ["downloads/manual/ILSVRC2012_img_train.tar",
                     "downloads/manual/ILSVRC2012_img_val.tar", data_dir]:
        assert expected in msg


# ----------------------------------- real TFRecords written by a local builder

N_TRAIN, N_TEST = 40, 12


class KdzooFakeImages(tfds.core.GeneratorBasedBuilder):
    """Tiny real TFDS dataset; pixel (0, 0, 0) is the example's id."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                "label": tfds.features.ClassLabel(num_classes=5),
                "extra": tfds.features.Tensor(shape=(2,), dtype=np.float32),
            }),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, N_TRAIN),
                "test": self._generate_examples(100, N_TEST)}

    def _generate_examples(self, start, n):
        rng = np.random.default_rng(start)
        for i in range(start, start + n):
            h, w = 6 + i % 4, 5 + i % 3
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            image[0, 0, 0] = i
            yield i, {"image": image, "label": i % 5,
                      "extra": np.zeros(2, np.float32)}


FAKE = D.DatasetSpec(
    name="fake", tfds_name="kdzoo_fake_images", tfds_config=None,
    train_split="train[:80%]", minival_split="train[80%:]", test_split="test",
    num_classes=5, input_size=4, eval_resize_small=5, cache_in_memory=True,
    approx_train_size=32, base_split_sizes={"train": N_TRAIN, "test": N_TEST})
FAKE_STREAMED = dataclasses.replace(FAKE, name="fake_streamed", cache_in_memory=False)


@pytest.fixture(scope="module")
def fake_data_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    builder = KdzooFakeImages(data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=4))
    assert builder.info.splits["train"].num_shards == 4
    return data_dir


def _ids(ds):
    out = []
    for image, label in ds.as_numpy_iterator():
        assert image.dtype == np.uint8 and label.dtype == np.int32
        assert label == image[0, 0, 0] % 5
        out.append(int(image[0, 0, 0]))
    return out


@pytest.mark.parametrize("spec", [FAKE, FAKE_STREAMED], ids=["cached", "streamed"])
def test_real_records_splits_counts_and_order(fake_data_dir, spec):
    train = _ids(D.load_split(spec, "train", fake_data_dir))
    minival = _ids(D.load_split(spec, "minival", fake_data_dir))
    test = _ids(D.load_split(spec, "test", fake_data_dir))
    # TFDS stores examples in its own (hashed) order: compare as sets.
    assert len(train) == 32 and len(minival) == 8 and not set(train) & set(minival)
    assert sorted(train + minival) == list(range(N_TRAIN))
    assert sorted(test) == list(range(100, 100 + N_TEST))
    assert _ids(D.load_split(spec, "train", fake_data_dir)) == train  # stable order
    assert D.num_examples(spec, "train", fake_data_dir) == 32
    assert D.num_examples(spec, "minival", fake_data_dir) == 8


@pytest.mark.parametrize("spec", [FAKE, FAKE_STREAMED], ids=["cached", "streamed"])
def test_real_records_deterministic_shuffle(fake_data_dir, spec):
    def epochs(seed, n=2):
        ds = D.load_split(spec, "train", fake_data_dir, shuffle=True, seed=seed)
        return [_ids(ds) for _ in range(n)]

    a, b, c = epochs(0), epochs(0), epochs(1)
    assert a == b  # same seed: the same sequence of epoch orders
    assert a[0] != a[1]  # a new order every epoch
    assert a != c  # another seed, another order
    unshuffled = _ids(D.load_split(spec, "train", fake_data_dir))
    assert sorted(a[0]) == sorted(a[1]) == sorted(unshuffled)
    assert a[0] != unshuffled


def test_shuffle_buffers_are_the_authors():
    # big_vision 0127fb6, configs/proj/distill: bigsweep_flowers_pet.py:60 and
    # bigsweep_food_sun.py:58 set 50_000; bit_i1k.py:45 sets 250_000.
    authors = {"flowers102": 50_000, "pets": 50_000, "food101": 50_000, "sun397": 50_000,
               "imagenet2012": 250_000}
    assert {n: D.get_spec(n).shuffle_buffer for n in authors} == authors
    for name in set(D.list_datasets()) - set(authors):  # the rest: a full shuffle
        assert D.get_spec(name).shuffle_buffer >= D.get_spec(name).approx_train_size


def test_streamed_shuffle_uses_the_spec_buffer(fake_data_dir):
    # Same seed, same file order; a buffer of 1 shuffles no examples, the spec's
    # 10k buffer does: the spec's value, not a module constant, is used.
    stored = _ids(D.load_split(FAKE_STREAMED, "train", fake_data_dir))
    one = dataclasses.replace(FAKE_STREAMED, shuffle_buffer=1)
    full = dataclasses.replace(FAKE_STREAMED, shuffle_buffer=10_000)
    runs = [_ids(D.load_split(s, "train", fake_data_dir, shuffle=True, seed=0))
            for s in (one, full)]
    assert sorted(runs[0]) == sorted(runs[1]) == sorted(stored)
    assert runs[0] != runs[1]


@pytest.mark.parametrize("role,expect_file_sharding", [("train", True), ("minival", False)])
def test_real_records_sharding_is_disjoint(fake_data_dir, role, expect_file_sharding):
    builder = D.tfds_builder(FAKE, fake_data_dir)
    assert (pipeline._num_files(builder, FAKE.split(role)) >= 2) == expect_file_sharding
    full = _ids(D.load_split(FAKE, role, fake_data_dir))
    shards = [_ids(D.load_split(FAKE, role, fake_data_dir, shuffle=True, seed=3,
                                input_context=tf.distribute.InputContext(2, i)))
              for i in range(2)]
    assert all(shards)
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(full)


def _graph_ops(ds):
    return ds._as_serialized_graph().numpy()


def test_cache_only_where_the_spec_says(fake_data_dir):
    assert b"CacheDataset" in _graph_ops(D.load_split(FAKE, "train", fake_data_dir))
    assert b"CacheDataset" not in _graph_ops(D.load_split(FAKE_STREAMED, "train",
                                                           fake_data_dir))
    assert b"CacheDataset" not in _graph_ops(D.load_split(FAKE, "train", fake_data_dir,
                                                          cache=False))


# ------------------------------------------------------------- fashion_mnist

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(FASHION), reason="dataset-fashion-mnist missing")
def test_fashion_mnist_minival_and_sharding():
    from kdzoo.data import fashion_mnist
    x, y = fashion_mnist.load("train")
    ds = D.load_split("fashion_mnist", "minival")
    images, labels = zip(*ds.as_numpy_iterator())
    np.testing.assert_array_equal(np.stack(images), x[55000:])
    np.testing.assert_array_equal(np.array(labels), y[55000:])
    shard = D.load_split("fashion_mnist", "minival",
                         input_context=tf.distribute.InputContext(2, 1))
    assert len(list(shard)) == 2500
    ev = D.make_eval_dataset("fashion_mnist", "minival", batch_size=1000)
    xb, yb = next(iter(ev))
    assert xb.shape == (1000, 28, 28, 1)
    np.testing.assert_array_equal(xb.numpy(), x[55000:56000].astype(np.float32))


# --------------------------------------------------------- eval preprocessing

def _np_round(v):
    return int(np.round(v))


def test_eval_preprocess_integer_downscale_matches_numpy_area():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(320, 480, 3), dtype=np.uint8)
    out = D.eval_preprocess(image, 128, 160).numpy()
    assert out.shape == (128, 128, 3) and out.dtype == np.float32
    # Independent: 2x2 block means (area resize by 2) -> 160x240, central crop.
    small = image.astype(np.float64).reshape(160, 2, 240, 2, 3).mean(axis=(1, 3))
    dy, dx = (160 - 128) // 2, (240 - 128) // 2
    np.testing.assert_allclose(out, small[dy:dy + 128, dx:dx + 128], atol=1e-3)


@pytest.mark.parametrize("h,w", [(333, 500), (500, 333), (100, 150), (161, 160)])
def test_eval_preprocess_geometry_matches_numpy(h, w):
    # A linear ramp survives a bilinear resize, so the crop position can be
    # checked from the values: pixel value = column index after resize.
    ratio = 160 / min(h, w)
    nh, nw = _np_round(h * ratio), _np_round(w * ratio)
    scale = 200.0 / w  # keep the ramp inside [0, 255]
    col = np.broadcast_to(np.arange(w, dtype=np.float32)[None, :, None] * scale, (h, w, 1))
    out = D.eval_preprocess(col, 128, 160, method="bilinear").numpy()
    assert out.shape == (128, 128, 1)
    dx = (nw - 128) // 2
    # Column j of the resized image samples source x = (j + 0.5) * w / nw - 0.5.
    expected = np.clip((np.arange(dx, dx + 128) + 0.5) * w / nw - 0.5, 0, w - 1)
    np.testing.assert_allclose(out[64, :, 0], expected * scale, atol=1e-3)
    assert nh >= 128 and nw >= 128


def test_eval_preprocess_identity_and_errors():
    image = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(D.eval_preprocess(image, 32, 32).numpy(),
                                  image.astype(np.float32))
    # No resize needed: just the central crop.
    big = np.random.default_rng(2).integers(0, 256, size=(160, 200, 3), dtype=np.uint8)
    np.testing.assert_array_equal(D.eval_preprocess(big, 128, 160).numpy(),
                                  big[16:144, 36:164].astype(np.float32))
    with pytest.raises(ValueError, match="resize_small"):
        D.eval_preprocess(image, 32, 16)


# ------------------------------------------------ train-view augmentation
# (kdzoo.data.augment; the authors' ops are big_vision pp/ops_image.py and utils.py)

def _np_bilinear(img, out):
    """Plain bilinear resize to out x out, half-pixel centres, edge clamp, no antialias."""
    h, w = img.shape[:2]

    def axis(n_in):
        src = np.clip((np.arange(out) + 0.5) * n_in / out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    img = img.astype(np.float64)
    top = img[y0][:, x0] * (1 - fx)[None, :, None] + img[y0][:, x1] * fx[None, :, None]
    bot = img[y1][:, x0] * (1 - fx)[None, :, None] + img[y1][:, x1] * fx[None, :, None]
    return top * (1 - fy)[:, None, None] + bot * fy[:, None, None]


def test_inception_crop_views_are_plain_bilinear_like_big_vision():
    from kdzoo.data import augment
    from kdzoo.distill.funmatch.views import ViewMaker
    image = np.random.default_rng(3).integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    for variant in ("same/ic", "funmatch", "ind/ic"):
        vm = ViewMaker(variant, 24, seed=5, flip=False)
        v = views_and_boxes(vm, tf.constant(image), 2, 0)
        y, x, h, w = v["student_box"].numpy()
        expected = _np_bilinear(image[y:y + h, x:x + w], 24)
        np.testing.assert_allclose(v["student"].numpy(), expected, atol=1e-3)
    # The antialiased option (and so the earlier default) is measurably different.
    aa = ViewMaker("same/ic", 24, seed=5, flip=False, antialias=True).train_views(
        tf.constant(image), 2, 0)["student"].numpy()
    assert np.abs(aa - expected).mean() > 2.0
    assert augment.train_resize("ic") == ("bilinear", False)


def test_short_side_crops_use_area_resampling_like_resize_small():
    from kdzoo.distill.funmatch.views import ViewMaker
    image = np.random.default_rng(4).integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    # crop_fraction 0.8 of the 40 px short side: a 32 px square, rendered at 16 = 2x2 means.
    vm = ViewMaker("fix/cc", 16, seed=0, crop_fraction=0.8)
    got = vm.target_view(tf.constant(image), 0).numpy()
    box = image[4:36, 9:41].astype(np.float64)
    np.testing.assert_allclose(got, box.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3)), atol=1e-3)
    rc = ViewMaker("same/rc", 16, seed=1, crop_fraction=0.8, flip=False)
    v = views_and_boxes(rc, tf.constant(image), 0, 0)
    y, x, h, w = v["student_box"].numpy()
    assert (h, w) == (32, 32)
    block = image[y:y + 32, x:x + 32].astype(np.float64).reshape(16, 2, 16, 2, 3)
    np.testing.assert_allclose(v["student"].numpy(), block.mean(axis=(1, 3)), atol=1e-3)
    # fix/rs: the whole image, plain bilinear (big_vision get_resize's default).
    rs = ViewMaker("fix/rs", 16, seed=0).target_view(tf.constant(image), 0).numpy()
    np.testing.assert_allclose(rs, _np_bilinear(image, 16), atol=1e-3)


def _ratios(alpha, n=3000):
    from kdzoo.data import augment

    @tf.function
    def draw():
        return tf.map_fn(lambda i: augment.mixup_ratio(augment.make_key(11, i), alpha),
                         tf.range(n, dtype=tf.int64), fn_output_signature=tf.float32)
    return np.sort(draw().numpy())


def _ks(sorted_values, cdf):
    n = len(sorted_values)
    f = cdf(sorted_values)
    return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


def test_mixup_ratio_is_max_of_r_and_one_minus_r():
    # big_vision utils.get_mixup: a ~ Beta(p, p); a = max(a, 1 - a).
    # Independent CDFs of max(r, 1 - r) on [0.5, 1]: G(x) = 2 F(x) - 1 with F the Beta CDF;
    # Beta(1, 1): F(x) = x; Beta(1/2, 1/2): F(x) = (2 / pi) arcsin(sqrt(x)).
    crit = 1.63 / np.sqrt(3000)  # Kolmogorov-Smirnov at the 1% level
    uniform = _ratios(1.0)
    assert uniform.min() >= 0.5 and uniform.max() <= 1.0
    assert _ks(uniform, lambda x: 2 * x - 1) < crit
    arcsine = _ratios(0.5)
    assert arcsine.min() >= 0.5
    assert _ks(arcsine, lambda x: 4 / np.pi * np.arcsin(np.sqrt(x)) - 1) < crit
    # A plain Beta(1, 1) ratio (half of it below 0.5) fails the same test.
    assert _ks(np.sort(np.random.default_rng(0).uniform(size=3000)), lambda x: 2 * x - 1) > crit


def test_mixup_mixes_all_views_with_one_ratio_and_the_rolled_partner():
    from kdzoo.data import augment
    rng = np.random.default_rng(5)
    s, t = rng.uniform(0, 255, (4, 6, 6, 3)), rng.uniform(0, 255, (4, 9, 9, 3))
    key = augment.make_key(3, 1)
    mixed, ratio = augment.mixup({"student": s, "teacher": t}, key, 1.0)
    r = float(ratio)
    assert 0.5 <= r <= 1.0
    for name, x in (("student", s), ("teacher", t)):
        np.testing.assert_allclose(mixed[name].numpy(), r * x + (1 - r) * x[[3, 0, 1, 2]],
                                   rtol=1e-5)
