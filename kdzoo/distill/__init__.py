"""Distillation: consistent and patient teaching (FunMatch), teacher-output cache, losses,
optimizer helper."""

from kdzoo.distill import losses  # noqa: F401
from kdzoo.distill.funmatch import FunMatchDistiller  # noqa: F401
from kdzoo.distill.optim import paper_optimizer, paper_schedule  # noqa: F401
from kdzoo.distill.teacher_cache import (  # noqa: F401
    TeacherCache, cache_teacher, open_teacher_cache)
from kdzoo.distill.views import FIXED_VARIANTS, VARIANTS, ViewMaker  # noqa: F401

__all__ = ["FIXED_VARIANTS", "FunMatchDistiller", "TeacherCache", "VARIANTS", "ViewMaker",
           "cache_teacher", "losses", "open_teacher_cache", "paper_optimizer",
           "paper_schedule"]
