"""kdzoo's optimizers: the paper's Adam set-up (:func:`paper_optimizer`, Beyer et al. 2022),
:class:`TorchSGD` (PyTorch's SGD, for the self-distillation authors' recipe), global-norm
gradient clipping, and :class:`Shampoo` (distributed Shampoo, Anil et al. 2020).

``kdzoo.distill.TorchSGD`` / ``kdzoo.distill.paper_optimizer`` are the same objects
(re-exported there, where the README names them).
"""

from kdzoo.optim.gradients import apply_with_global_clip
from kdzoo.optim.paper_adam import paper_optimizer, paper_schedule
from kdzoo.optim.shampoo import GRAFT_TYPES, Shampoo
from kdzoo.optim.torch_sgd import TorchSGD, official_schedule

__all__ = ["GRAFT_TYPES", "Shampoo", "TorchSGD", "apply_with_global_clip", "official_schedule",
           "paper_optimizer", "paper_schedule"]
