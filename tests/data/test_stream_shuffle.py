"""FunMatch on a streamed set shuffles as big_vision does (issue 24, audit): record files
read in a seeded order, then a 50,000 (food101, sun397) / 250,000 (imagenet2012) example
buffer, not the distiller's 10,000 over files in stored order. Cached sets (Fashion-MNIST
and the other small ones) are read and shuffled exactly as before.
"""

import types

import pytest
import tensorflow as tf

import kdzoo.data
from kdzoo.data import pipeline
from kdzoo.train import runner


def _run(dataset, **kw):
    fields = dict(dataset=dataset, distill_dataset=None, train_split=None, data_dir=None,
                  seed=7, train_per_class=None, num_train_examples=None, batch_size=4,
                  subset_seed=0, train_images=None)
    return types.SimpleNamespace(**{**fields, **kw})


@pytest.mark.parametrize("dataset, buffer", [("food101", 50_000), ("sun397", 50_000),
                                             ("imagenet2012", 250_000)])
def test_streamed_sets_get_big_visions_buffer(dataset, buffer):
    assert runner.stream_shuffle(_run(dataset)) == {"shuffle_buffer": buffer}


def test_cached_sets_keep_the_distillers_default():
    for dataset in ("fashion_mnist", "flowers102", "pets", "cifar100"):
        assert runner.stream_shuffle(_run(dataset)) == {}


def _load_kwargs(monkeypatch, run):
    seen = {}

    def fake_load(spec, role, data_dir=None, **kw):
        seen.update(kw)
        return tf.data.Dataset.range(10)

    monkeypatch.setattr(kdzoo.data, "load_split", fake_load)
    monkeypatch.setattr(kdzoo.data, "num_examples", lambda *a, **k: 10)
    runner.train_examples(run)
    return seen


def test_a_whole_streamed_split_is_read_over_seeded_shuffled_files(monkeypatch):
    kw = _load_kwargs(monkeypatch, _run("imagenet2012"))
    assert kw.get("shuffle_files") is True and kw.get("seed") == 7
    assert not kw.get("shuffle")  # the examples are the stream's to shuffle
    assert kw.get("reshuffle_each_iteration") is False  # one order: exact resumes


@pytest.mark.parametrize("run", [_run("fashion_mnist"), _run("imagenet2012",
                                                              num_train_examples=8)])
def test_cached_sets_and_first_n_reads_keep_the_stored_order(monkeypatch, run):
    kw = _load_kwargs(monkeypatch, run)
    assert not kw.get("shuffle_files") and not kw.get("shuffle")


def test_load_split_shuffle_files_reaches_tfds_without_an_example_shuffle(monkeypatch):
    seen = {}

    def fake_read(spec, split, data_dir, shuffle, seed, input_context, reshuffle):
        seen.update(shuffle=shuffle, seed=seed, reshuffle=reshuffle)
        return tf.data.Dataset.range(5), None

    monkeypatch.setattr(pipeline, "_read_tfds", fake_read)
    ds = pipeline.load_split("food101", "train", shuffle_files=True, seed=3,
                             reshuffle_each_iteration=False)
    assert seen == {"shuffle": True, "seed": 3, "reshuffle": False}
    assert [int(x) for x in ds] == [0, 1, 2, 3, 4]  # no example-level shuffle added
