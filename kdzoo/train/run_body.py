"""What every training run does around its method, written once (issue 26).

Why one body: a run's preamble (dtype policy, seeds, strategy, batch split), the claim
of its work directory (lock + recorded settings, :mod:`kdzoo.train.run_dir`), the
removal of a killed export's temp files, the resumable fit, the evaluation of each
``eval_roles`` split, the save of ``model.keras`` and ``metrics.json`` are the same for
FunMatch and for every method trained on labels. Written once, they cannot drift apart
(the outputs differed by method before: ``student.keras`` vs ``model.keras``), and a new
method supplies only a :class:`Prepared`: its compiled model, schedule, train and eval
data, and what it exports (see ``run_funmatch`` / ``run_supervised`` in
:mod:`kdzoo.train.runner`).
"""

import dataclasses
import os

from kdzoo.atomic import save_model
from kdzoo.train import checkpointing, run_dir
from kdzoo.train.distribute import get_strategy, split_batch, worker_subdir
from kdzoo.train.fit import fit_schedule, seed_everything, set_precision

__all__ = ["Prepared", "execute", "preamble"]

# What a run writes that a killed process may leave half written as ``.tmp-<name>-*``.
# The legacy name stays: a run resumed in an older FunMatch run's directory cleans its temp.
EXPORTS = (run_dir.MODEL_FILE, run_dir.LEGACY_MODEL_FILE, "metrics.json", "history.csv")


@dataclasses.dataclass
class Prepared:
    """What one method gives :func:`execute`, built (models compiled) under the strategy.

    ``model``: what ``fit`` trains and ``evaluate`` scores. ``make_train(step)``: the
    train stream from global step ``step``. ``eval_split(role)``: the eval dataset of
    split ``role``. ``export()``: the ``keras.Model`` saved as ``model.keras`` (the
    student alone for a distiller). ``teachers``: frozen models whose weights the
    run's record pins. ``metrics``: the method's own ``metrics.json`` keys (before
    ``eval``). ``on_claimed()``: called once the work directory is claimed, before the
    fit (e.g. FunMatch opens its teacher cache only then).
    """

    model: object
    schedule: object
    make_train: object
    eval_split: object
    eval_text: str
    export: object
    teachers: tuple = ()
    metrics: dict = dataclasses.field(default_factory=dict)
    on_claimed: object = None


def preamble(run, check_split=True):
    """``(precision, strategy)`` of ``run``: the dtype policy set (its resolved name
    returned), the seeds set, the strategy made; ``check_split``: a clear error now if
    ``run.batch_size`` does not split evenly over the strategy's replicas."""
    precision = set_precision(run.mixed_precision)
    seed_everything(run.seed, run.deterministic)
    strategy = get_strategy(run.strategy)
    if check_split:
        split_batch(run.batch_size, strategy)
    return precision, strategy


def execute(run, prepare):
    """Run ``run``: :func:`preamble`, ``prepare(strategy)`` -> :class:`Prepared`, then the
    claim, fit, evaluation, ``model.keras`` and ``metrics.json``; returns the metrics."""
    precision, strategy = preamble(run)
    prepared = prepare(strategy)
    # One workdir = one run: lock it for the run's life, record / compare its settings
    # (after the data and flag checks, so a refused command leaves the workdir unclaimed;
    # with the teachers' weights, so the models are built first).
    settings, defaults = settings_for(run, precision, prepared.teachers)
    workdir_lock = run_dir.claim(run.workdir, settings, overwrite=run.overwrite,
                                 worker=worker_subdir(), defaults=defaults)
    remove_stale_exports(run)
    if prepared.on_claimed is not None:
        prepared.on_claimed()
    best = _fit(prepared.model, prepared.make_train, run, prepared.schedule)
    metrics = dict(summary(run, prepared.schedule), **prepared.metrics,
                   eval=prepared.eval_text, **best)
    for role in run.eval_roles:
        metrics[role] = prepared.model.evaluate(prepared.eval_split(role), return_dict=True,
                                                verbose=0)
    save_model(prepared.export(), os.path.join(run.workdir, run_dir.MODEL_FILE))
    checkpointing.write_json(os.path.join(run.workdir, "metrics.json"), metrics)
    workdir_lock.release()
    return metrics


def _fit(model, make_train, run, schedule):
    """fit_schedule over ``schedule``: ``make_train(step)`` streams from global step ``step``,
    the one recorded with the checkpoint a resume starts from.

    Returns what ``metrics.json`` gets from the best / last epoch report
    (:mod:`kdzoo.distill.self_distill.exit_reporting`: on for self distillation, it evaluates
    minival and test after every Keras epoch), ``{}`` without one."""
    from kdzoo.distill.self_distill import exit_reporting
    callbacks = exit_reporting.callbacks_for(model, run)
    fit_schedule(model, make_train, schedule, workdir=run.workdir, callbacks=callbacks,
                 checkpoint_every_minutes=run.checkpoint_every_minutes,
                 keep_checkpoints=run.keep_checkpoints, verbose=run.verbose,
                 batch_size=getattr(run, "batch_size", None))
    return exit_reporting.metrics_entries(callbacks)


def settings_for(run, precision, teachers=()):
    """``(settings, defaults)`` for :func:`kdzoo.train.run_dir.claim`: the run's fields plus what
    its fields do not pin down: the *resolved* dtype policy (``"auto"`` differs between
    machines) and the sha256 of each teacher's weights (a callable may load any file).

    A record of older kdzoo lacks these keys: they are unknown there, not different
    (as defaults, their values now match), so such a run still resumes and records them.
    """
    from kdzoo.distill.funmatch.fingerprint import weights_fingerprint
    extra = {"precision": precision}
    if teachers:
        extra["teacher_weights_sha256"] = [weights_fingerprint(t) for t in teachers]
    return dict(run_dir.settings_of(run), **extra), dict(run_dir.defaults_of(run), **extra)


def remove_stale_exports(run):
    """Delete the temp files a killed export left in the run's own directory.

    Only ours, by name (``.tmp-<export>-*``), and only under the run lock just claimed:
    every writer of these files holds it, so any such file belongs to a dead process.
    """
    from kdzoo.atomic import remove_stale_temp_files
    own = os.path.join(run.workdir, worker_subdir() or "")
    for name in EXPORTS:
        remove_stale_temp_files(os.path.join(own, name))


def summary(run, schedule):
    """The ``metrics.json`` keys every run has: its grid values and its schedule."""
    return {"params": run.params, "epochs": run.epochs, "total_steps": schedule.total_steps,
            "steps_per_log": schedule.interval}
