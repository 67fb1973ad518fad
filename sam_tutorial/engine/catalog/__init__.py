"""The experiment catalogue: every named experiment, one module per part of the book.

=================== ===============================================================================
module              experiments
=================== ===============================================================================
``smoke``           ``smoke`` (a pipeline check; command line only)
``m_sharpness``     chapter 4: ``m-sharpness-cnn``; ``escape`` (recorded), ``m-sweep`` (command line only)
``reweighted``      chapter 5: ``rw-compare``, ``rw-study-compare``, ``rw-study-lambda``, ``rw-study-noise``
``controls``        chapters 4-5: ``controls-noise``, ``controls-escape`` (the CNN's memorising setting)
``paper``           chapter 6: the paper's Tables 1, 4 and 6 (``table*``)
``deciding``        chapter 6: the runs that decide the paper's claims
``registry``        ``EXPERIMENTS``, ``register``, ``get_experiment``: the registry every module fills
``mlp``             the MNIST-1D MLP setting several modules share (no experiment of its own)
=================== ===============================================================================

Importing this package registers each experiment in :data:`registry.EXPERIMENTS` (a module adds its own
with :func:`registry.register`; ``mlp`` holds the MNIST-1D MLP setting several modules share). A new
chapter's experiments go in a new module here, imported below; an experiment that no chapter runs says
why in ``cli_only``.
"""

# isort: off  (the registry lists experiments in import order, the book's order)
from sam_tutorial.engine.catalog import registry, mlp, smoke, m_sharpness, reweighted, controls  # noqa: I001
from sam_tutorial.engine.catalog import paper, deciding
# isort: on

__all__ = ["controls", "deciding", "m_sharpness", "mlp", "paper", "registry", "reweighted", "smoke"]
