"""Write files so a crash or kill never leaves a half-written one under the final name."""

import contextlib
import json
import os
import socket
import tempfile

TEMP_PREFIX = ".tmp-"  # what a killed writer can leave behind; never a final name


def _read_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: os.umask can only be read by setting it, which would briefly change the
# mode of files other threads (e.g. TensorBoard's writer) create at the same moment.
_FILE_MODE = 0o666 & ~_read_umask()


@contextlib.contextmanager
def atomic_path(path, suffix="", prefix=None):
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    ``suffix`` keeps extensions that writers insist on (e.g. ``".weights.h5"``);
    ``prefix`` (it must start with ``TEMP_PREFIX``) defaults to
    :func:`entry_prefix` of ``path``: the temp file names the file it becomes, so
    the holder of that file's lock knows which leftovers are its own (see
    :func:`remove_stale_temp_files`).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = entry_prefix(path) if prefix is None else prefix
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; the final file gets the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:  # e.g. ENOSPC from write/fsync: say which file it was
            raise OSError(e.errno, e.strerror, path) from e
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def entry_prefix(path):
    """The temp-file prefix of one cache entry: ``.tmp-<file name>-``."""
    return f"{TEMP_PREFIX}{os.path.basename(path)}-"


def remove_stale_temp_files(path):
    """Delete temporary files a killed writer of ``path`` left beside it.

    Only call this while holding ``path``'s lock: every writer of ``path``
    holds it, so any ``.tmp-<name>-*`` file found then belongs to a dead one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return []
    stale = [f for f in os.listdir(directory) if f.startswith(entry_prefix(path))]
    for name in stale:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(directory, name))
    return stale


def _held_by_this_process(lock_path):
    """Whether ``lock_path`` names this process as its holder (:mod:`kdzoo.file_lock`
    writes the holder's pid and host into the file it locks)."""
    try:
        with open(lock_path, encoding="utf-8") as f:
            holder = json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return False
    return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


@contextlib.contextmanager
def writer_lock(path, what=None):
    """Hold ``<path>.lock`` while writing ``path``; first delete a killed writer's temp files.

    A caller that holds the lock already (the recipes' grid, around the teacher cache)
    keeps it. Leftovers (``.tmp-<name>-*``) are deleted only when no other live process
    holds the lock: every writer holds it, so they are a dead writer's. When another
    process holds it (a writer not waiting for it), nothing is deleted.
    """
    from kdzoo.errors import WorkdirInUseError
    from kdzoo.file_lock import FileLock
    lock = FileLock(f"{path}.lock", what=what or f"{path}")
    try:
        lock.acquire()
    except WorkdirInUseError:
        lock = None
    if lock is not None or _held_by_this_process(f"{path}.lock"):
        remove_stale_temp_files(path)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def write_text(path, text, suffix="", prefix=None):
    """A text file, fsynced and renamed into place."""
    with atomic_path(path, suffix, prefix) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, obj):
    """JSON, fsynced and renamed into place."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n", ".json")


def save_weights(model, path, prefix=None):
    """``model.save_weights(path)`` (model and, if built, optimizer state), atomically."""
    with atomic_path(path, ".weights.h5", prefix) as tmp:
        model.save_weights(tmp, overwrite=True)


def save_model(model, path):
    """``model.save(path)`` as a ``.keras`` file, atomically."""
    with atomic_path(path, ".keras") as tmp:
        model.save(tmp)
