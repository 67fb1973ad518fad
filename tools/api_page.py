"""Write book/api.md from the package tree: one section per subpackage, one automodule per module.

    python tools/api_page.py          # rewrite book/api.md
    python tools/api_page.py --check  # exit 1 if book/api.md is not what this script writes

Every module lists its public names in ``__all__``, so ``:members:`` documents exactly the public API.
"""

from __future__ import annotations

import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "api.md"

SECTIONS = (
    ("sam_tutorial.optim", "the SAM family as optimizers"),
    ("sam_tutorial.sgn", "stochastic gradient noise"),
    ("sam_tutorial.curvature", "Hessian, Hutchinson, sharpness"),
    ("sam_tutorial.theory", "toy problems, recursions, the SDE"),
    ("sam_tutorial.engine", "data, models, training, experiments"),
    ("sam_tutorial.engine.catalog", "the named experiments"),
    ("sam_tutorial.reproduction", "claims, checks, the status rule, the scoreboard"),
    ("sam_tutorial.chapters", "helpers of the book's chapters"),
)

HEADER = """# API reference

The package `sam_tutorial` does every computation in the book. This page is generated from its
docstrings (`python tools/api_page.py`). In the optimizers, the noise, the curvature and the theory
subpackages each function and class links back to the chapter section that uses it (`Book: chapter N,
"section"`) and, where known, the item of the paper it implements (`paper: Thm. 3.5`). The layout and
the direction of imports are in `ARCHITECTURE.md` at the root of the repository.

## `sam_tutorial`: the public face

```{eval-rst}
.. automodule:: sam_tutorial
   :no-members:
```

## `sam_tutorial.__main__`: the command line (`python -m sam_tutorial`, `sam-tutorial`)

```{eval-rst}
.. automodule:: sam_tutorial.__main__
   :members: main
```

## `sam_tutorial.config`: modes, device, seeding, budgets, argument checks

```{eval-rst}
.. automodule:: sam_tutorial.config
   :members:
```

## `sam_tutorial.stats`: the book's statistics and its one decision rule

```{eval-rst}
.. automodule:: sam_tutorial.stats
   :members:
```

## `sam_tutorial.published`: the numbers taken from publications, with their sources

```{eval-rst}
.. automodule:: sam_tutorial.published
   :members:
```
"""


def modules(package: str) -> list[str]:
    """The modules directly inside ``package`` (sub-packages excluded), sorted."""
    path = ROOT / Path(*package.split("."))
    return sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules([str(path)])
                  if not m.ispkg and not m.name.startswith("_"))


def page() -> str:
    parts = [HEADER]
    for package, title in SECTIONS:
        parts.append(f"\n## `{package}`: {title}\n\n```{{eval-rst}}\n")
        parts.append(f".. automodule:: {package}\n   :no-members:\n")
        for module in modules(package):
            parts.append(f"\n.. automodule:: {module}\n   :members:\n")
        parts.append("```\n")
    return "".join(parts)


def main(argv: list[str]) -> int:
    text = page()
    if "--check" in argv:
        if PAGE.read_text() != text:
            print("book/api.md is out of date: run `python tools/api_page.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
