r"""Curvature and sharpness of the training loss: Hessian-vector products, the top of the Hessian
spectrum (Lanczos), the Hessian trace (Hutchinson, and the probe variance of claim C9), and the
sharpness measures of Foret et al. and Andriushchenko & Flammarion (m-sharpness, SAM sharpness,
average sharpness).

============== ==============================================================
module         what it computes
============== ==============================================================
``hessian``    :math:`Hv`, the explicit Hessian of a small model, Lanczos
``hutchinson`` :math:`\operatorname{tr}H` by random probes; one probe's variance
``sharpness``  m-sharpness, SAM sharpness, average-case sharpness
============== ==============================================================
"""

from sam_tutorial.curvature.hessian import hessian_matrix, hessian_vector_product, lanczos, top_eigenvalues
from sam_tutorial.curvature.hutchinson import hessian_trace, make_probes, probe_variance
from sam_tutorial.curvature.sharpness import average_sharpness, m_sharpness, sam_sharpness

__all__ = [
    "average_sharpness",
    "hessian_matrix",
    "hessian_trace",
    "hessian_vector_product",
    "lanczos",
    "m_sharpness",
    "make_probes",
    "probe_variance",
    "sam_sharpness",
    "top_eigenvalues",
]
