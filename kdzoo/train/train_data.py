"""What a run trains on: its train split (or ``train_images``), a first N, or a balanced subset.

Why apart from the runner: the runner builds models and fits; this is the data side
of a run's options (:class:`kdzoo.train.runner.RunOptions`), shared by FunMatch and
supervised runs: which examples, how many (the schedule's N), and the streamed sets'
shuffle buffer.
"""

import dataclasses

__all__ = ["train_examples", "stream_shuffle"]


def _train_spec(run):
    """The spec the run trains on, with ``run.train_split`` in place of its train split."""
    from kdzoo.data import get_spec
    spec = get_spec(getattr(run, "distill_dataset", None) or run.dataset)
    return dataclasses.replace(spec, train_split=run.train_split) if run.train_split else spec


def train_examples(run):
    """``(examples, N)`` a run trains on: the train split, or the arrays of
    ``run.train_images`` (:mod:`kdzoo.data.arrays`), or their first N, or a balanced subset."""
    from kdzoo.data import load_split, num_examples
    from kdzoo.data.arrays import array_examples
    from kdzoo.data.subset import balanced_subset
    from kdzoo.errors import RecipeError
    spec, n = _train_spec(run), None
    if run.train_images:
        examples, n = array_examples(run.train_images, spec, run.num_train_examples)
    else:
        whole = not (spec.cache_in_memory or run.train_per_class or run.num_train_examples)
        examples = load_split(spec, "train", run.data_dir, seed=run.seed, shuffle_files=whole,
                              reshuffle_each_iteration=False)
    if run.train_per_class:
        examples, n = balanced_subset(examples, run.train_per_class, run.subset_seed)
    elif run.num_train_examples:
        examples, n = examples.take(run.num_train_examples), run.num_train_examples
    n = n or num_examples(spec, "train", run.data_dir)
    if n is not None and run.batch_size > n:  # checked before the workdir is claimed
        raise RecipeError(f"--batch_size {run.batch_size} is larger than the {n} training "
                          f"images of this run; pass --batch_size {n} or less (or more images).")
    return examples, n


def stream_shuffle(run):
    """big_vision's buffer for a streamed set (food101, sun397: 50k; imagenet2012: 250k)
    over its shuffled files (:func:`train_examples`); cached sets keep the default."""
    spec = _train_spec(run)
    return {} if spec.cache_in_memory else {"shuffle_buffer": spec.shuffle_buffer}
