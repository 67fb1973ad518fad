r"""Stochastic gradient noise (SGN): the per-sample gradients :math:`\nabla f_i`, their covariance
:math:`V` (trace and spectrum), the law of a mini-batch gradient (:math:`c_B`, claims C1-C2) and the
Fisher information (paper §3).

==================== ===================================================================
module               what it computes
==================== ===================================================================
``functional``       a model as a pure function of one flat parameter vector
``per_sample``       per-sample gradients ``[n, P]`` (``torch.func``, chunked)
``fast_norms``       per-sample gradient norms in one forward + backward (module hooks)
``variance``         :math:`\operatorname{tr}V`, its spectrum and eigenvectors, the empirical Fisher
``batches``          :math:`c_B`, the law of index sets, exact moments of :math:`g_\gamma` (C1, C2)
``monte_carlo``      the same moments by sampling batches (an independent check)
``fisher``           the true Fisher trace, labels drawn from the model
``curvature_noise``  :math:`\tfrac12\nabla\operatorname{tr}V=\operatorname{Cov}_i(H_i,\nabla f_i)`
``reweighting``      RW-SAM's ingredients: Gibbs weights, probe scores, effective batch (C8, C9)
==================== ===================================================================
"""

from sam_tutorial.sgn.batches import (
    batch_distribution,
    batch_grad_moments,
    batch_noise_coefficient,
    expected_sq_batch_grad_norm,
)
from sam_tutorial.sgn.fast_norms import per_sample_sq_norms
from sam_tutorial.sgn.fisher import fisher_trace
from sam_tutorial.sgn.per_sample import per_sample_grads
from sam_tutorial.sgn.variance import empirical_fisher_trace, sgn_spectrum, sgn_trace, trace_V

__all__ = [
    "batch_distribution",
    "batch_grad_moments",
    "batch_noise_coefficient",
    "empirical_fisher_trace",
    "expected_sq_batch_grad_norm",
    "fisher_trace",
    "per_sample_grads",
    "per_sample_sq_norms",
    "sgn_spectrum",
    "sgn_trace",
    "trace_V",
]
