"""Exceptions that tell the user what went wrong and what to do about it."""


class CheckpointError(ValueError):
    """A weight file is missing keys, has wrong shapes, is truncated, corrupt or unsafe."""


class DownloadError(OSError):
    """A published file could not be fetched (no network, bad URL, wrong hash)."""
