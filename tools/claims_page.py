"""Write the claims index ``book/claims.md`` from the registry (``sam_tutorial.reproduction.claims``) and
chapter 6's scoreboard (toy checks recomputed, recorded results in ``results/``).

    python tools/claims_page.py          # rewrite book/claims.md
    python tools/claims_page.py --check  # exit 1 if book/claims.md is out of date

A test (``tests/reproduction/test_claims.py``) runs the check, so the page, the scoreboard and chapter 6's
list of failures cannot drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "claims.md"


def page() -> str:
    """The page's text, computed now."""
    import torch

    from sam_tutorial.engine.recorded import packaged_results
    from sam_tutorial.reproduction.claims import claims_page
    from sam_tutorial.reproduction.scoreboard import scoreboard

    torch.set_num_threads(1)  # the toy checks are tiny: threads only add synchronisation
    return claims_page(scoreboard(packaged_results()))


def main(argv: list[str]) -> int:
    text = page()
    if "--check" in argv:
        if PAGE.read_text() != text:
            print("book/claims.md is out of date: run `python tools/claims_page.py`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
