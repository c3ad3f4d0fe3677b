"""Every zoo architecture; importing this package registers them all.

Every module of the package is imported here (found with ``pkgutil``), so a new
family registers by existing: there is no import list to forget.
"""

import importlib
import pkgutil

from kdzoo.models.common import stage_names, stage_outputs  # noqa: F401

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
