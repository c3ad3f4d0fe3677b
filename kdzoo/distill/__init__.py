"""Distillation methods: FunMatch (:mod:`.funmatch`: consistent and patient teaching, the
teacher-output cache), classical KD (:mod:`.classical_kd`, Hinton et al. 2015) and self
distillation (:mod:`.self_distill`, with depth-adaptive early-exit inference), and what
they share (losses, input checks, metric directions). The optimizers (``TorchSGD``,
``paper_optimizer``) live in :mod:`kdzoo.optim` and are re-exported here, where the README
names them."""

from kdzoo.distill import losses  # noqa: F401
from kdzoo.distill.classical_kd import KnowledgeDistillation, kd_loss  # noqa: F401
from kdzoo.distill.self_distill.early_exit import (EarlyExit, count_flops, exit_flops, export_exit,  # noqa: F401
                                                   to_tflite)
from kdzoo.distill.self_distill.exit_calibration import calibrate_thresholds  # noqa: F401
from kdzoo.distill.self_distill.exit_heads import HEADS as EXIT_HEADS  # noqa: F401
from kdzoo.distill.funmatch import FunMatchDistiller  # noqa: F401
from kdzoo.distill.keras_losses import FunMatchLoss, SelfDistillationHint  # noqa: F401
from kdzoo.distill.funmatch.lockstep import LockstepGrid  # noqa: F401
from kdzoo.optim.paper_adam import paper_optimizer, paper_schedule  # noqa: F401
from kdzoo.distill.funmatch.cache_writer import cache_teacher  # noqa: F401
from kdzoo.distill.funmatch.teacher_cache import TeacherCache, open_teacher_cache  # noqa: F401
from kdzoo.optim.torch_sgd import TorchSGD, official_schedule  # noqa: F401
from kdzoo.distill.funmatch.views import FIXED_VARIANTS, VARIANTS, ViewMaker  # noqa: F401

__all__ = ["EXIT_HEADS", "EarlyExit", "FIXED_VARIANTS", "FunMatchDistiller", "FunMatchLoss", "KnowledgeDistillation", "LockstepGrid", "TeacherCache",
           "TorchSGD", "VARIANTS", "ViewMaker", "cache_teacher", "calibrate_thresholds",
           "count_flops", "exit_flops", "export_exit", "losses", "official_schedule",
           "kd_loss", "open_teacher_cache", "paper_optimizer", "paper_schedule", "SelfDistillationHint",
           "to_tflite"]
