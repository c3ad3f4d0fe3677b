"""Self distillation (Zhang et al. 2019, BYOT) and depth-adaptive
(early-exit) inference: the trainer, exit heads, losses,
calibration, export and reporting."""

from kdzoo.distill.self_distill.distiller import (HINTS, KD_SCALINGS, MODES, SelfDistillation,
                                                  cross_entropy, self_distillation_terms)

__all__ = [
    "HINTS",
    "KD_SCALINGS",
    "MODES",
    "SelfDistillation",
    "cross_entropy",
    "self_distillation_terms",
]
