"""Exceptions that tell the user what went wrong and what to do about it."""

import errno


class CheckpointError(ValueError):
    """A weight file is missing keys, has wrong shapes, is truncated, corrupt or unsafe."""


class DownloadError(OSError):
    """A published file could not be fetched (no network, bad URL, wrong hash)."""


class WorkdirInUseError(RuntimeError):
    """Another live process holds the lock of a work directory (or a cache entry)."""


class SettingsMismatchError(ValueError):
    """A work directory holds a run whose result-changing settings differ from this one's."""


class NonFiniteInputError(ValueError):
    """Images or labels given to fit / evaluate hold NaN or Inf values."""


class ModelCardError(ValueError):
    """A model card file is unusable (bad JSON, missing keys, a name that is not plain)."""


class RecipeError(ValueError):
    """A recipe's option cannot be used as given (the message says which and what to do)."""



class NonFiniteLossError(RuntimeError):
    """Raised when a training loss becomes NaN or Inf."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not prepared in the data directory; the message says how to get it."""


# Errors whose message tells the user what to change: recipes print them without a traceback.
FIXABLE = (CheckpointError, SettingsMismatchError, WorkdirInUseError, RecipeError,
           ModelCardError)


_OS_ERRORS = {
    errno.ENOSPC: ("no space left on device at {path}", "free space there, or pass a "
                   "--workdir on a disk with room; rerun the same command to resume"),
    errno.EDQUOT: ("disk quota exceeded at {path}", "free space there, or pass a --workdir "
                   "on a disk with room; rerun the same command to resume"),
    errno.EROFS: ("{path} is on a read-only file system", "pass a writable --workdir"),
    errno.EACCES: ("permission denied writing {path}", "pass a --workdir you can write to"),
    errno.EPERM: ("permission denied writing {path}", "pass a --workdir you can write to"),
}


def os_error_message(error):
    """A one-line message for an ``OSError`` a user fixes on their side, else ``None``.

    Disk full, quota, read-only file system and permissions: the message names the
    path and what to do (recipes print it and exit 2 instead of a traceback).
    """
    known = _OS_ERRORS.get(getattr(error, "errno", None))
    if known is None:
        return None
    what, todo = known
    path = error.filename if error.filename is not None else "(path not reported)"
    return f"{what.format(path=path)}: {todo}."


def user_message(error):
    """What a recipe prints (then exits 2) for an error the user can fix, else ``None``."""
    if isinstance(error, DatasetNotFoundError):
        return f"{error}\nOr pass --data_dir=DIR where it is already prepared."
    if isinstance(error, DownloadError):
        return (f"{error}\nIn a recipe, pass the downloaded file with --teacher=/path/to/FILE "
                "(the student: --student_init=/path/to/FILE).")
    if isinstance(error, FIXABLE):
        return str(error)
    if isinstance(error, OSError):
        return os_error_message(error)
    return None
