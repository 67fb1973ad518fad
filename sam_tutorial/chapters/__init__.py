"""What exists only for the book's chapters: the figure style, interactive explorers with static
fallbacks, the 2-D landscape helpers of chapter 1 and the noise/curvature snapshots of chapter 2.

Documented and tested, but not a stability promise: library users want :mod:`sam_tutorial.optim`,
:mod:`sam_tutorial.sgn`, :mod:`sam_tutorial.curvature`, :mod:`sam_tutorial.theory` and
:mod:`sam_tutorial.engine`. Needs the ``notebook`` extra (matplotlib, ipywidgets) for plotting.
"""

from sam_tutorial.config import require

require("matplotlib", "notebook")  # every chapter helper draws; without the extra, say which to install

__all__: list[str] = []
