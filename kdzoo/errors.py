"""Exceptions that tell the user what went wrong and what to do about it."""


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
