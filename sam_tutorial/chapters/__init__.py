"""Presentation only: what exists for the book's pages and draws, explores or hands numbers to the prose.
The evidence itself is made elsewhere (experiments in :mod:`sam_tutorial.engine`, verdicts in
:mod:`sam_tutorial.reproduction`, statistics in :mod:`sam_tutorial.stats`).

==================== =====================================================================
module               what it holds
==================== =====================================================================
``plotting``         the book's figure style, one colour per variant (read from the registry)
``glue``             numbers a cell computes handed to the prose (myst-nb's glue, with a fallback)
``landscape``        chapter 1: the SAM family on a 2-D landscape; loss grids, basins, ascent circles
``widgets``          chapter 1's landscape explorer, with a static fallback
``snapshot``         chapter 2: tr V, the Fisher traces and the Hessian along a training trajectory
``rwsam_explorer``   chapter 5: one batch's RW-SAM scores and Gibbs weights as λ and the score change
==================== =====================================================================

Documented and tested, but not a stability promise: library users want :mod:`sam_tutorial.optim`,
:mod:`sam_tutorial.sgn`, :mod:`sam_tutorial.curvature`, :mod:`sam_tutorial.theory` and
:mod:`sam_tutorial.engine`. Needs the ``notebook`` extra (matplotlib, ipywidgets) for plotting.
"""
from sam_tutorial.config import require

require("matplotlib", "notebook")  # every chapter helper draws; without the extra, say which to install

__all__: list[str] = []
