"""kdzoo's optimizers beyond Keras's: :class:`Shampoo` (distributed Shampoo, Anil et al. 2020).

The paper's Adam setup (``paper_optimizer``) and ``TorchSGD`` stay in
:mod:`kdzoo.distill.optim` / :mod:`kdzoo.distill`; see ``docs/optim.md``.
"""

from kdzoo.optim.shampoo import GRAFT_TYPES, Shampoo

__all__ = ["Shampoo", "GRAFT_TYPES"]
