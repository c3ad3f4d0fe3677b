"""Silence the TFDS deprecation warnings every run printed, and nothing else.

Why: TFDS 4.9 logs "`FeatureConnector.dtype` is deprecated ..." and
"`TensorInfo.dtype` is deprecated ..." (through absl, ``feature.py``) several times
per split it opens, from its own code, not kdzoo's; a user cannot act on them
and they buried the run's real output. The filter drops exactly those messages at
WARNING level on the ``absl`` logger; every other warning still shows.
"""

import logging
import re

__all__ = ["KnownHarmless", "silence_known_warnings"]

# TFDS's own wording (tensorflow_datasets/core/features/feature.py, the dtype properties).
HARMLESS = re.compile(r"^`(FeatureConnector|TensorInfo)\.dtype` is deprecated\. Please change "
                      r"your code to use NumPy with the field `\w+\.np_dtype`")


class KnownHarmless(logging.Filter):
    """Drops WARNING records whose message is one of :data:`HARMLESS`."""

    def filter(self, record):
        if record.levelno != logging.WARNING:
            return True
        try:
            return not HARMLESS.match(record.getMessage())
        except Exception:  # a record that cannot be formatted is not ours to hide
            return True


def silence_known_warnings():
    """Install :class:`KnownHarmless` on the ``absl`` logger once (idempotent)."""
    absl = logging.getLogger("absl")
    if not any(isinstance(f, KnownHarmless) for f in absl.filters):
        absl.addFilter(KnownHarmless())
