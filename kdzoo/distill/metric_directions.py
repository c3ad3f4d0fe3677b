"""Metric directions for Keras' ``mode="auto"`` (ModelCheckpoint, EarlyStopping).

Keras 3 (``keras/src/callbacks/monitor_callback.py``) looks a monitored name up only
among metrics held in a ``MetricsList`` of ``model.metrics`` and reads their
``_direction`` ("up" or "down"); trackers a custom model lists directly are not
searched, so ``monitor="val_accuracy"`` raised "isn't able to automatically determine
whether that metric should be maximized". The distillers list their trackers through
:func:`with_directions`. (Its own module so that the distillers need not import the
callbacks, which import the distillers.)
"""

import keras
from keras.src.trainers.compile_utils import MetricsList


class MetricDirections(MetricsList):
    """Lists metrics for Keras' ``mode="auto"`` lookup; holds no state, logs nothing.

    It owns no variables (its metrics are not tracked as children, so they are
    neither reset nor saved twice) and its ``result()`` is ``{}``, which Keras'
    log flattening drops.
    """

    def __init__(self, metrics, name="metric_directions"):
        keras.metrics.Metric.__init__(self, name=name)
        listed = tuple(metrics)
        self._listed = lambda: listed  # a closure: invisible to Keras' variable tracker

    @property
    def metrics(self):
        return list(self._listed())

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        return {}


def with_directions(metrics, up=(), down=()):
    """``metrics`` + a :class:`MetricDirections` of them, after setting directions.

    ``up`` / ``down``: names of metrics (e.g. ``keras.metrics.Mean`` trackers,
    which have no direction) that improve upward / downward. Accuracy metrics
    already say "up"; a monitored ``loss`` is recognised by name.
    """
    metrics = list(metrics)
    for m in metrics:
        if m.name in up:
            m._direction = "up"
        elif m.name in down:
            m._direction = "down"
    return metrics + [MetricDirections(metrics)]
