"""``kdzoo.callbacks``, kept where the README promises it: the names of
:mod:`kdzoo.train.callbacks`, where the code now lives."""

from kdzoo.train.callbacks import MetricDirections, StudentCheckpoint, with_directions

__all__ = ["MetricDirections", "StudentCheckpoint", "with_directions"]
