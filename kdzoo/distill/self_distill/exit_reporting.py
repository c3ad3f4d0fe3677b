"""Last-epoch and best-epoch top-1 of every exit and the ensemble of a self-distillation run.

The official BYOT code tests after every epoch and keeps the **best test-set**
ensemble accuracy and its checkpoint (``train.py`` lines 203-208:
``if correct[4] / total > best_acc: ... torch.save(...)``), which is what it prints at
the end (line 208). Picking the epoch on the test set makes that figure optimistic.
:class:`ExitAccuracyReport` records, after every Keras epoch, top-1 of each exit and
of the ensemble on a *selection* split (held-out images, never the test set) and on
the test split, and writes ``exit_accuracy.json``::

    last_epoch          the final epoch: selection + test
    best_epoch          the epoch with the best selection-split ensemble top-1
                        (first one on ties): selection + test at that epoch
    test_selected_best  the official code's figure, the epoch with the best *test*
                        ensemble top-1: labelled as selected on the test set

"epoch" is a Keras epoch of the run (in ``kdzoo.train`` one log interval,
``steps_per_log`` steps: 500 for the CIFAR-100 recipe, not one pass over the data);
``step`` is the optimiser step at its end; ``train_s`` the seconds from the epoch's
start to its last train step (no evaluation, no checkpoint: what a comparison of
training speed needs). Each split's entry holds
``{"exit1".."exitN", "ensemble"}`` top-1. A resumed run reloads
the file and drops the epochs it trains again. ``best_weights``: the weights of
the best selection epoch are also written there (atomically), as the official code
saves its best checkpoint, but chosen on the selection split.
"""

import json
import os
import time

import keras

from kdzoo.atomic import atomic_path, write_json

REPORT_NAME = "exit_accuracy.json"
TEST_SELECTED_NOTE = ("selected on the TEST set, as the official train.py lines 203-208; "
                      "optimistic, not an estimate of accuracy on new images")


def _accuracies(results):
    """``{"exit1".., "ensemble"}`` of a ``SelfDistillation``; ``{"ensemble"}`` (its only
    output, so the same selection rule applies) of a one-output model's ``accuracy``."""
    if "ensemble_top1" not in results:
        if "accuracy" not in results:
            raise ValueError(f"ExitAccuracyReport reads 'ensemble_top1' (SelfDistillation) "
                             f"or 'accuracy' (compile(metrics=['accuracy'])) from "
                             f"evaluate; got only {sorted(results)}.")
        return {"ensemble": float(results["accuracy"])}
    out = {k[:-len("_top1")]: float(v) for k, v in results.items()
           if k.startswith("exit") and k.endswith("_top1")}
    out["ensemble"] = float(results["ensemble_top1"])
    return out


class ExitAccuracyReport(keras.callbacks.Callback):
    """Evaluate every exit and the ensemble after each epoch; write the report.

    Args:
      selection_data: batches of (images, labels) the network does not train on
        (e.g. minival); the best epoch is chosen here.
      test_data: batches of the test split, or ``None``: reported, never used to
        choose (except in the labelled ``test_selected_best``).
      path: the JSON report, written atomically after every epoch.
      selection_name: how the report names the selection split.
      selection_trained_on: ``True`` when the selection images are also training
        images (then ``best_epoch`` says so; it is not a held-out choice).
      best_weights: optional ``*.weights.h5`` path for the best selection epoch.
    """

    def __init__(self, selection_data, test_data=None, path=REPORT_NAME, *,
                 selection_name="minival", selection_trained_on=False, best_weights=None):
        super().__init__()
        if selection_data is None:
            raise ValueError("ExitAccuracyReport needs selection_data (held-out images, "
                             "e.g. minival): the best epoch is never chosen on the test set.")
        if best_weights is not None and not str(best_weights).endswith(".weights.h5"):
            raise ValueError(f"best_weights must end in '.weights.h5' (Keras' weights "
                             f"format), got {best_weights!r}.")
        self.selection_data, self.test_data = selection_data, test_data
        self.path, self.selection_name = path, selection_name
        self.selection_trained_on = bool(selection_trained_on)
        self.best_weights = best_weights
        self.history = []
        self._epoch_start = self._last_step = None  # a callback driven without fit: no time

    def on_train_begin(self, logs=None):
        if not self.history and os.path.exists(self.path):
            with open(self.path) as f:
                self.history = json.load(f).get("per_epoch", [])

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._last_step = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last_step = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch + 1, "step": int(self.model.optimizer.iterations),
                 "train_s": None if self._epoch_start is None else
                 self._last_step - self._epoch_start,
                 self.selection_name: _accuracies(
            self.model.evaluate(self.selection_data, return_dict=True, verbose=0))}
        if self.test_data is not None:
            entry["test"] = _accuracies(
                self.model.evaluate(self.test_data, return_dict=True, verbose=0))
        self.history = [h for h in self.history if h["epoch"] < epoch + 1] + [entry]
        report = self.report()
        if self.best_weights and report["best_epoch"]["epoch"] == epoch + 1:
            with atomic_path(self.best_weights, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp)
        write_json(self.path, report)

    def report(self):
        """The report dict (see the module doc) of the epochs recorded so far."""
        if not self.history:
            return {"per_epoch": []}
        sel = self.selection_name

        def best(key):
            top = max(h[key]["ensemble"] for h in self.history)
            return dict(next(h for h in self.history if h[key]["ensemble"] == top))

        chosen = best(sel)
        chosen["selected_on"] = f"{sel} ensemble top-1"
        if self.selection_trained_on:
            chosen["warning"] = (f"the {sel} images are also training images: this epoch "
                                 "is not chosen on held-out data")
        out = {"selection_split": sel, "last_epoch": dict(self.history[-1]),
               "best_epoch": chosen, "per_epoch": list(self.history)}
        if self.test_data is not None or any("test" in h for h in self.history):
            with_test = [h for h in self.history if "test" in h]
            top = max(h["test"]["ensemble"] for h in with_test)
            picked = next(h for h in with_test if h["test"]["ensemble"] == top)
            out["test_selected_best"] = {"epoch": picked["epoch"], "test": picked["test"],
                                         "note": TEST_SELECTED_NOTE}
        return out


def callbacks_for(model, run, spec=None, image_size=None):
    """``[ExitAccuracyReport]`` for the model of a kdzoo run, else ``[]``.

    On for a ``SelfDistillation`` model (self distillation, deep supervision); for
    any other model only when ``run.best_epoch_report`` is ``True`` (a study that
    compares baselines on the same footing); ``run.best_epoch_report=False`` turns
    it off. ``spec`` / ``image_size`` default to ``run.dataset``'s spec and
    ``run.image_size`` (else the spec's input size), as ``run_supervised`` evaluates.
    The hook of ``kdzoo.train``'s ``_fit``: selection on ``minival``, report on
    ``test``, into ``run.workdir/exit_accuracy.json`` (a worker of a multi-worker
    run writes into its own subdirectory) and ``best_exit.weights.h5``.
    Cost: both splits are evaluated after every Keras epoch (``log_every_steps``).
    """
    from kdzoo.data import get_spec, load_split
    from kdzoo.distill.self_distill import SelfDistillation
    from kdzoo.train.distribute import worker_subdir
    from kdzoo.train.fit import eval_batches, eval_resize_small

    wanted = getattr(run, "best_epoch_report", None)
    if wanted is False or (wanted is None and not isinstance(model, SelfDistillation)):
        return []
    spec = spec or get_spec(run.dataset)
    image_size = image_size or getattr(run, "image_size", None) or spec.input_size

    def batches(role):
        return eval_batches(load_split(spec, role, run.data_dir), image_size,
                            run.eval_batch_size, eval_resize_small(spec, image_size))

    own = os.path.join(run.workdir, worker_subdir() or "")
    trained_on = bool(run.train_split) and run.train_split != spec.train_split
    return [ExitAccuracyReport(batches("minival"), batches("test"),
                               os.path.join(own, REPORT_NAME),
                               selection_trained_on=trained_on,
                               best_weights=os.path.join(own, "best_exit.weights.h5"))]


def metrics_entries(callbacks):
    """What ``metrics.json`` gets from the reports among ``callbacks``: ``{}`` if none.

    Keys (top-1 in [0, 1], per exit and ``ensemble``; a one-output model has only
    ``ensemble``): ``top1_last_epoch`` (the final epoch, selection split + test),
    ``top1_best_epoch`` (the epoch of the best selection-split ensemble top-1, with
    its test figures and ``selected_on``), ``top1_test_selected_best`` (the official
    code's figure, labelled as chosen on the TEST set). Read from the report file, so
    a rerun of a finished run (nothing trained now) still has them.
    """
    for cb in callbacks:
        if isinstance(cb, ExitAccuracyReport):
            report = cb.report() if cb.history else _read(cb.path)
            if not report.get("per_epoch"):
                return {}
            out = {"top1_last_epoch": _slim(report["last_epoch"]),
                   "top1_best_epoch": _slim(report["best_epoch"]),
                   "best_epoch_report": os.path.basename(cb.path)}
            if "test_selected_best" in report:
                out["top1_test_selected_best"] = report["test_selected_best"]
            return out
    return {}


def _read(path):
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _slim(entry):
    return {k: v for k, v in entry.items() if k != "per_epoch"}
