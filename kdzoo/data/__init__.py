"""Datasets: specs with the papers' splits, input pipelines, the embedded Fashion-MNIST."""

from kdzoo.data.specs import (DatasetSpec, ROLES, SPECS, get_spec, list_datasets,
                              split_ranges, split_size)
from kdzoo.data.pipeline import (DatasetNotFoundError, eval_preprocess, load_split,
                                 make_eval_dataset, num_examples, tfds_builder)

__all__ = ["DatasetSpec", "ROLES", "SPECS", "get_spec", "list_datasets", "split_ranges",
           "split_size", "DatasetNotFoundError", "eval_preprocess", "load_split",
           "make_eval_dataset", "num_examples", "tfds_builder"]
