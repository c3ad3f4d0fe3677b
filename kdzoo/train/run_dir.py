"""A work directory is one run: its settings are recorded once and it is locked while used.

Rerunning a command on its work directory resumes the run. That is only sound
when the rerun *is* the same run, so :func:`claim` (called by
:func:`kdzoo.train.run_funmatch` / ``run_supervised`` before anything is
read or written):

1. takes ``workdir/run.lock`` (:class:`kdzoo.file_lock.FileLock`) for the
   run's whole life; a second live process on the same directory is refused
   with the holder's pid and host; a dead holder's lock is taken over. In a
   multi-worker run each worker locks its own directory (the chief
   ``workdir``, the others ``workdir/worker-<i>``), since each writes only
   there;
2. compares the settings with ``workdir/config.json``, recorded by the first
   run: a difference in any result-changing key raises
   :class:`kdzoo.errors.SettingsMismatchError` naming every differing key,
   and offers a new ``--workdir`` or ``--overwrite`` (``overwrite=True``:
   delete this run's files and start over). Keys in :data:`NEUTRAL` (e.g.
   ``epochs`` extended) may change: the new value is recorded, with the old
   one, under ``"reruns"``.

``--overwrite`` deletes only what a run writes (:data:`RUN_ENTRIES`), and only
in a directory that holds a kdzoo run (a ``config.json`` kdzoo wrote, marked
``"kdzoo_run"``; older records are known by their keys): ``--workdir ~/thesis
--overwrite`` must never empty a folder of someone's own files. Files kdzoo does
not know are left in place and named.

A grid's points each have their own directory, settings and lock; the grid's
shared settings are recorded in ``<grid workdir>/grid.json`` by
:func:`check_grid`, so points configured differently never meet in one summary.
"""

import functools
import json
import os
import re
import shutil
import time

from kdzoo.atomic import TEMP_PREFIX, write_json
from kdzoo.errors import SettingsMismatchError
from kdzoo.file_lock import FileLock

LOCK_FILE = "run.lock"
CONFIG_FILE = "config.json"
GRID_FILE = "grid.json"
# The trained network of every run, whatever its method (a plain keras.Model for FunMatch).
MODEL_FILE = "model.keras"
# What FunMatch runs of kdzoo before issue 26 wrote instead: still read (model_file), still
# known as a run's own file (--overwrite deletes it, a killed export's temp is removed).
LEGACY_MODEL_FILE = "student.keras"
# Settings that do not change what a run computes for the epochs it shares with
# another: how long it runs, what it prints, how often it checkpoints, where the
# (same) data lives and the eval batching.
NEUTRAL = frozenset({"epochs", "verbose", "data_dir", "eval_batch_size", "log_every_steps",
                     "checkpoint_every_steps", "checkpoint_every_minutes",
                     "keep_checkpoints", "eval_roles"})
# Not settings of the run at all.
# "kdzoo_run": the record's format version, the mark that kdzoo wrote it (see _wipe).
MARKER = "kdzoo_run"
RECORD_FORMAT = 2
IGNORED = frozenset({"workdir", "overwrite", "reruns", MARKER})
# Recorded by the runner beside a run's fields (kdzoo.train.run_body.settings_for): the resolved
# dtype policy and the teachers' weights digests. A resume (claim) compares them; a
# reader that has only the fields (check_record from a study) cannot, and skips them.
DERIVED = frozenset({"precision", "teacher_weights_sha256"})
# What a run (or a grid / study around it) writes in its directory: all --overwrite deletes.
RUN_ENTRIES = frozenset({CONFIG_FILE, GRID_FILE, "metrics.json", "history.csv", "state.json",
                         "checkpoints", "logs", MODEL_FILE, LEGACY_MODEL_FILE,
                         "measured.json"})
RUN_SUFFIXES = (".tcache", ".tcache.lock", ".keras", ".weights.h5")
# A record written before the marker: always "reruns", and the run's dataset and epochs.
_OLD_RECORD_KEYS = frozenset({"reruns", "dataset", "epochs"})
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def model_file(workdir):
    """The path of the trained network of the finished run in ``workdir``.

    Why one function: every run now writes ``model.keras``, but FunMatch runs of an older
    kdzoo wrote ``student.keras``, and their directories (long runs still training at an
    older commit, finished studies) must stay readable by every report. ``model.keras``
    wins when both exist (a newer run's export). Raises :class:`FileNotFoundError`
    naming ``workdir`` and both names when neither exists.
    """
    for name in (MODEL_FILE, LEGACY_MODEL_FILE):
        path = os.path.join(workdir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"{workdir} holds no trained model: neither {MODEL_FILE} (written by every finished "
        f"run) nor {LEGACY_MODEL_FILE} (a FunMatch run of an older kdzoo). Has the run "
        "finished? Train it first, or check the work directory.")


def describe(value):
    """A JSON value that is the same for the same setting in every process.

    Callables (model builders) are named by module and qualified name; a
    ``functools.partial`` also by its arguments; memory addresses are dropped.
    """
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, functools.partial):
        args = [describe(a) for a in value.args]
        kwargs = {k: describe(v) for k, v in sorted(value.keywords.items())}
        return {"callable": describe(value.func), "args": args, "kwargs": kwargs}
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return _ADDRESS.sub("", repr(value))


def settings_of(run):
    """The settings of a run description (a dataclass such as ``FunMatchRun``)."""
    import dataclasses
    return {f.name: describe(getattr(run, f.name)) for f in dataclasses.fields(run)
            if f.name not in IGNORED}


def defaults_of(run):
    """The described default of every field of a run dataclass (see :func:`claim`)."""
    import dataclasses
    out = {}
    for f in dataclasses.fields(run):
        if f.default is not dataclasses.MISSING:
            out[f.name] = describe(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = describe(f.default_factory())
    return json.loads(json.dumps(out))


def _differences(recorded, settings, skip, defaults=None):
    keys = (set(recorded) | set(settings)) - IGNORED - skip
    missing = "<not set>"
    defaults = defaults or {}
    # A setting the record predates is the same run when it is at its default (the
    # default is the behaviour the older kdzoo had).
    keys = {k for k in keys if k in recorded or k not in defaults
            or settings.get(k, missing) != defaults[k]}
    return {k: (recorded.get(k, missing), settings.get(k, missing)) for k in sorted(keys)
            if recorded.get(k, missing) != settings.get(k, missing)}


def _read_record(path):
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return record
    except (OSError, ValueError) as e:
        raise SettingsMismatchError(
            f"{path} cannot be read ({type(e).__name__}: {e}), so kdzoo cannot tell "
            "whether this run is the one recorded there, nor that the directory is a kdzoo "
            "run (--overwrite deletes only those). Use a new --workdir, or, if it is a run "
            "you no longer need, delete it yourself.") from None


def _mismatch(directory, path, diffs, whole="--workdir"):
    listed = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in diffs.items())
    return SettingsMismatchError(
        f"{directory} already holds a run with other settings ({listed}; recorded in "
        f"{path}). Resuming it would mix two runs. Use a new {whole} for these settings, or "
        "pass --overwrite (overwrite=True) to delete that run's files and start over.")


def written_by_kdzoo(name):
    """Whether an entry of a work directory is one a run writes (so --overwrite may delete it)."""
    return (name in RUN_ENTRIES or name.startswith(TEMP_PREFIX) or name.endswith(RUN_SUFFIXES)
            or re.fullmatch(r"point-\d{3}", name) is not None)


def holds_run(directory):
    """Whether ``directory/config.json`` is a record kdzoo wrote (marked, or of the old format)."""
    try:
        with open(os.path.join(directory, CONFIG_FILE), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and (MARKER in record or _OLD_RECORD_KEYS <= set(record))


def _wipe(directory, keep=(LOCK_FILE,), owned=False):
    """Delete what a run wrote in ``directory``; refuse a directory that holds no kdzoo run.

    ``owned``: the caller knows the directory is kdzoo's (a grid point under a grid's
    ``grid.json``). Unknown entries are never deleted; they are printed instead.
    Returns the names left in place.
    """
    entries = sorted(n for n in os.listdir(directory)
                     if n not in keep and not n.startswith("worker-"))  # workers wipe their own
    if entries and not (owned or holds_run(directory)):
        raise SettingsMismatchError(
            f"--overwrite (overwrite=True) would delete everything in {directory} "
            f"({_listing(entries)}), but it holds no kdzoo run (no config.json written by "
            "kdzoo), so kdzoo deletes nothing there. Use an empty or new --workdir, or move "
            "those files away yourself.")
    unknown = [n for n in entries if not written_by_kdzoo(n)]
    for name in entries:
        if name not in unknown:
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    if unknown:
        print(f"--overwrite: left in place in {directory}, not written by kdzoo: "
              f"{_listing(unknown)}", flush=True)
    return unknown


def _listing(names, most=8):
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def claim(workdir, settings, *, overwrite=False, worker=None, defaults=None):
    """Lock ``workdir`` (or its ``worker`` subdirectory) and record / compare ``settings``.

    ``defaults`` (:func:`defaults_of`): a key missing from an older record is not
    a difference while its value now is the default.

    Returns the held :class:`~kdzoo.file_lock.FileLock`; keep it for the run's
    life and ``release()`` it at the end (it is also released when dropped or
    when the process dies). Raises :class:`~kdzoo.errors.WorkdirInUseError` or
    :class:`~kdzoo.errors.SettingsMismatchError`.
    """
    own = os.path.join(workdir, worker) if worker else workdir
    os.makedirs(own, exist_ok=True)
    lock = FileLock(os.path.join(own, LOCK_FILE), what=f"Work directory {own}").acquire()
    try:
        if overwrite:  # a worker's own directory is one kdzoo made (the record is the chief's)
            _wipe(own, owned=bool(worker))
        if worker is None:  # the chief owns the record; the others only write logs
            _record(workdir, json.loads(json.dumps(settings)), defaults)
    except BaseException:
        lock.release()
        raise
    return lock


def _record(workdir, settings, defaults=None):
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        write_json(path, dict(settings, reruns=[], **{MARKER: RECORD_FORMAT}))
        return
    recorded = _read_record(path)
    diffs = _differences(recorded, settings, NEUTRAL, defaults)
    if diffs:
        raise _mismatch(workdir, path, diffs)
    changed = _differences(recorded, settings, frozenset())
    if changed:
        reruns = list(recorded.get("reruns", []))
        reruns.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "changed": {k: list(v) for k, v in changed.items()}})
        write_json(path, dict(recorded, **settings, reruns=reruns, **{MARKER: RECORD_FORMAT}))


def check_record(workdir, settings, defaults=None):
    """Raise :class:`SettingsMismatchError` unless ``workdir/config.json`` records ``settings``.

    Read only (no lock, nothing written): how a study tells that a finished run is
    the one it would run now before reusing its results. Neutral keys may differ;
    :data:`DERIVED` keys are compared only when ``settings`` holds them.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise SettingsMismatchError(
            f"{workdir} holds results but no {CONFIG_FILE}, so kdzoo cannot tell which "
            "settings produced them. Use a new --workdir, or delete that directory yourself.")
    recorded = _read_record(path)
    skip = NEUTRAL | (DERIVED - set(settings))
    diffs = _differences(recorded, json.loads(json.dumps(settings)), skip, defaults)
    if diffs:
        raise _mismatch(workdir, path, diffs)
    return recorded


def check_grid(workdir, shared, *, overwrite=False, whole_grid=False, point_dirs=(),
               shared_files=()):
    """Record a grid's ``shared`` settings (all but the grid's own keys) in ``grid.json``.

    A later run of any point with other shared settings is refused. With
    ``overwrite`` and ``whole_grid`` (a run of every point), the finished
    ``point_dirs`` are deleted first (each after taking its lock, so a point
    still running elsewhere is never deleted); a single point
    (``--grid_index``) cannot replace the grid's shared settings. ``shared_files``
    (built for the whole grid) are deleted with the points.
    """
    shared = json.loads(json.dumps(shared))
    path = os.path.join(workdir, GRID_FILE)
    if not os.path.exists(path):
        write_json(path, shared)
        return
    recorded = _read_record(path)
    diffs = _differences(recorded, shared, NEUTRAL)
    if not diffs:
        return
    if not (overwrite and whole_grid):
        raise _mismatch(workdir, path, diffs, whole="--workdir for the grid")
    for point in point_dirs:
        if os.path.isdir(point):
            with FileLock(os.path.join(point, LOCK_FILE), what=f"Grid point {point}"):
                _wipe(point, owned=True)  # under our grid.json: kdzoo's point
    for built in shared_files:  # e.g. the grid's teacher cache, built for the old settings
        if os.path.exists(built):
            with FileLock(built + ".lock", what=f"The grid's {os.path.basename(built)}"):
                os.remove(built)
    write_json(path, shared)
