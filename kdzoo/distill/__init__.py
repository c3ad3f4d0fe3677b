"""Distillation: consistent and patient teaching (FunMatch), teacher-output cache, losses,
optimizer helpers, self distillation with depth-adaptive (early-exit) inference."""

from kdzoo.distill import losses  # noqa: F401
from kdzoo.distill.early_exit import (  # noqa: F401
    EarlyExit, count_flops, exit_flops, export_exit, to_tflite)
from kdzoo.distill.exit_calibration import calibrate_thresholds  # noqa: F401
from kdzoo.distill.exit_heads import HEADS as EXIT_HEADS  # noqa: F401
from kdzoo.distill.funmatch import FunMatchDistiller  # noqa: F401
from kdzoo.distill.keras_losses import FunMatchLoss, SelfDistillationHint  # noqa: F401
from kdzoo.distill.lockstep import LockstepGrid  # noqa: F401
from kdzoo.distill.optim import paper_optimizer, paper_schedule  # noqa: F401
from kdzoo.distill.cache_writer import cache_teacher  # noqa: F401
from kdzoo.distill.teacher_cache import TeacherCache, open_teacher_cache  # noqa: F401
from kdzoo.distill.torch_sgd import TorchSGD, official_schedule  # noqa: F401
from kdzoo.distill.views import FIXED_VARIANTS, VARIANTS, ViewMaker  # noqa: F401

__all__ = ["EXIT_HEADS", "EarlyExit", "FIXED_VARIANTS", "FunMatchDistiller", "FunMatchLoss", "LockstepGrid", "TeacherCache",
           "TorchSGD", "VARIANTS", "ViewMaker", "cache_teacher", "calibrate_thresholds",
           "count_flops", "exit_flops", "export_exit", "losses", "official_schedule",
           "open_teacher_cache", "paper_optimizer", "paper_schedule", "SelfDistillationHint",
           "to_tflite"]
