"""The SAM family as PyTorch optimizers: SAM/USAM (and ASAM), n-SAM, m-SAM, RW-SAM.

Every class wraps a base ``torch.optim.Optimizer`` instance and the model, and runs all passes of a step
in ``step(inputs, targets, loss_fn)``, where ``loss_fn`` returns one loss per sample (or
``step(batch, loss_fn)`` with ``loss_fn(model, batch)`` for any batch and any model; see
:class:`~sam_tutorial.optim.base.PerturbedOptimizer`):

>>> import torch
>>> from sam_tutorial.optim import MSAM
>>> model = torch.nn.Linear(4, 3)
>>> opt = MSAM(model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), rho=0.05, m=2)
>>> stats = opt.step(torch.randn(8, 4), torch.randint(0, 3, (8,)),
...                  torch.nn.CrossEntropyLoss(reduction="none"))
>>> sorted(stats._fields)
['grad_norm', 'loss', 'loss_perturbed', 'perturbation_norm', 'skipped', 'weights']

============ ===========================================================================
module       what it holds
============ ===========================================================================
``base``     :class:`~sam_tutorial.optim.base.PerturbedOptimizer` (passes, buffers, skip, checkpoint;
             the subclass protocol of a new variant), :class:`~sam_tutorial.optim.base.StepStats`
``sam``      SAM, USAM and ASAM (paper Eq. (2))
``nsam``     n-SAM / n-USAM: the perturbation from the full-data gradient
``msam``     m-SAM / m-USAM: one perturbation per micro-batch of m samples (loop or vmap)
``rwsam``    RW-SAM: one perturbation from a Gibbs-reweighted batch (paper §5)
``variants`` the variant registry: name, printed name, class, settings, examples, colour
============ ===========================================================================

This package imports nothing outside itself and torch.
"""

from sam_tutorial.optim.base import PerturbedOptimizer, StepStats
from sam_tutorial.optim.msam import MSAM
from sam_tutorial.optim.nsam import NSAM
from sam_tutorial.optim.rwsam import RWSAM, gibbs_weights
from sam_tutorial.optim.sam import SAM

__all__ = ["MSAM", "NSAM", "RWSAM", "SAM", "PerturbedOptimizer", "StepStats", "gibbs_weights"]
