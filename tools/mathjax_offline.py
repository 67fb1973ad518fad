"""Sphinx extension: serve MathJax 3 from the built book instead of a CDN.

The HTML pages load ``_static/mathjax/tex-chtml.js`` (``mathjax_path`` in ``_config.yml``). This
extension copies that file, with the fonts and the TeX extensions it loads on demand, from the MathJax
distribution that the Python package ``django-static-mathjax`` installs (a registry package of the
``book`` extra: no download happens at build time). A book opened from disk, on a machine with no
network, then renders every formula.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError

# what tex-chtml.js needs beside itself: output fonts, the TeX extensions it autoloads, the menu and a11y
PARTS = ("tex-chtml.js", "input/tex/extensions", "output/chtml", "ui", "a11y", "adaptors")


def mathjax_source() -> Path:
    """The ``es5`` folder of the installed MathJax 3 distribution."""
    try:
        import mathjax  # the package django-static-mathjax
    except ImportError as exc:
        raise ExtensionError(
            "MathJax is served from the book itself: install it with "
            "`pip install django-static-mathjax` (part of the `book` extra; `make setup` does it)"
        ) from exc
    root = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (root / "tex-chtml.js").is_file():
        raise ExtensionError(f"no MathJax 3 distribution at {root}: reinstall django-static-mathjax")
    return root


def _check(app: Sphinx) -> None:
    mathjax_source()


def _copy(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    src, dest = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in PARTS:
        s, d = src / part, dest / part
        if s.is_dir():
            shutil.copytree(s, d, dirs_exist_ok=True)
        elif s.is_file():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _check)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
