"""The experiment catalogue: every named experiment, one module per part of the book.

Importing this package registers each experiment in :data:`sam_tutorial.engine.experiments.EXPERIMENTS`
(a module adds its own with :func:`~sam_tutorial.engine.experiments.register`). A new chapter's
experiments go in a new module here, imported below.
"""

from sam_tutorial.engine.catalog import chapters, controls, deciding, m_sharpness, paper, reweighted

__all__ = ["chapters", "controls", "deciding", "m_sharpness", "paper", "reweighted"]
