"""Distillation: consistent and patient teaching (FunMatch), losses, optimizer helper."""

from kdzoo.distill import losses  # noqa: F401
from kdzoo.distill.funmatch import FunMatchDistiller  # noqa: F401
from kdzoo.distill.optim import paper_optimizer, paper_schedule  # noqa: F401
from kdzoo.distill.views import FIXED_VARIANTS, VARIANTS, ViewMaker  # noqa: F401

__all__ = ["FIXED_VARIANTS", "FunMatchDistiller", "VARIANTS", "ViewMaker", "losses",
           "paper_optimizer", "paper_schedule"]
