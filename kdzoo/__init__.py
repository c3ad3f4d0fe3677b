"""kdzoo: knowledge distillation for Keras 3 — a model zoo, patient & consistent
teaching (FunMatch), self distillation, and the recipes that reproduce the papers."""

from kdzoo import models  # noqa: F401  (registers architectures and custom layers)
from kdzoo.registry import list_models, model_info
from kdzoo.zoo import load

__version__ = "0.1.0"

_LAZY = {
    "FunMatchDistiller": ("kdzoo.distill.funmatch", "FunMatchDistiller"),
    "SelfDistillation": ("kdzoo.distill.self_distill", "SelfDistillation"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    if name in ("data", "distill", "models", "convert"):
        import importlib
        return importlib.import_module(f"kdzoo.{name}")
    raise AttributeError(f"module 'kdzoo' has no attribute {name!r}")


__all__ = ["load", "list_models", "model_info", "FunMatchDistiller", "SelfDistillation",
           "data", "distill", "models", "convert", "__version__"]
