"""Glue for the chapters' prose: a number a cell computes is handed to the text of the built book.

In a Jupyter Book build (and wherever ``myst-nb`` is installed) :func:`glue` is ``myst_nb.glue``, which
stores the value in the cell's output for ``{glue:text}`` roles. A reader on Colab or in a plain Jupyter
kernel has no ``myst-nb``: there :func:`glue` stores nothing, shows the value when ``display`` is true,
and the cells' printed outputs carry the same numbers the book's prose quotes.

>>> glue("x", 0.5, display=False) is None
True
"""

from __future__ import annotations

from typing import Any

__all__ = ["glue", "has_myst_nb"]


def has_myst_nb() -> bool:
    """Whether ``myst_nb`` can be imported (it comes with the ``book`` extra, not the ``notebook`` one)."""
    import importlib.util

    return importlib.util.find_spec("myst_nb") is not None


def glue(name: str, value: Any, display: bool = True) -> None:
    """``myst_nb.glue(name, value, display)`` when myst-nb is installed; otherwise show ``value`` if
    ``display`` is true and store nothing (the book's ``{glue:...}`` roles exist only in a book build)."""
    if has_myst_nb():
        from myst_nb import glue as myst_glue

        myst_glue(name, value, display=display)
        return None
    if display:
        from IPython.display import display as show

        show(value)
    return None
