"""The book's structure: the table of contents, the files in book/, and the notebook conventions.

Conventions (DESIGN.md, "Notebook conventions"): notebooks are stored without outputs, run on
the ``python3`` kernel, open with a title cell, then a bootstrap cell that installs the package
from the repository named in ``_config.yml`` when it is missing, then a ``parameters``-tagged cell
that prints the banner (mode, device, torch version).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGE_SUFFIXES = (".md", ".ipynb")


def _toc_files(node: Any) -> Iterator[str]:
    """Every ``root``/``file`` entry of a jb-book table of contents, depth first."""
    if isinstance(node, dict):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                yield node[key]
        for value in node.values():
            yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def _resolve(entry: str) -> Path | None:
    base = ROOT / entry
    if base.suffix in PAGE_SUFFIXES:
        return base if base.exists() else None
    found = [base.with_suffix(s) for s in PAGE_SUFFIXES if base.with_suffix(s).exists()]
    return found[0] if len(found) == 1 else None


def toc_entries() -> list[str]:
    return list(_toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text())))


def toc_notebooks() -> list[Path]:
    paths = [_resolve(e) for e in toc_entries()]
    return [p for p in paths if p is not None and p.suffix == ".ipynb"]


def book_pages() -> set[Path]:
    """Pages in book/ meant for the table of contents (names starting with "_" are not)."""
    return {
        p for p in BOOK.iterdir() if p.suffix in PAGE_SUFFIXES and not p.name.startswith("_")
    }


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def test_toc_format_and_root() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert toc["format"] == "jb-book"
    assert toc["root"] == "book/intro"


def test_every_toc_entry_is_one_file_in_book() -> None:
    entries = toc_entries()
    assert len(entries) == len(set(entries)), "an entry appears twice in _toc.yml"
    for entry in entries:
        path = _resolve(entry)
        assert path is not None, f"_toc.yml names {entry!r}, which is not exactly one .md/.ipynb"
        assert path.parent == BOOK, f"{entry!r} is not in book/"


def test_every_page_in_book_is_in_the_toc() -> None:
    listed = {_resolve(e) for e in toc_entries()}
    missing = sorted(p.name for p in book_pages() - listed)
    assert not missing, f"pages in book/ missing from _toc.yml: {missing}"


def test_reference_pages_exist() -> None:
    for name in ("intro.md", "notation.md", "glossary.md", "api.md", "bibliography.md"):
        assert (BOOK / name) in book_pages()
    assert (BOOK / "_template.ipynb").exists()


def test_bibliography_has_the_required_sources() -> None:
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "references.bib").read_text()))
    required = {
        "luo2025unveiling", "foret2021sam", "andriushchenko2022understanding", "compagnoni2023sde",
        "li2017sme", "li2019sme", "wen2023how", "kwon2021asam", "behdin2023msam",
        "greydanus2020mnist1d",
    }
    assert required <= keys, f"missing: {sorted(required - keys)}"


def test_every_citation_in_the_book_is_in_the_bibliography() -> None:
    keys = set(re.findall(r"@\w+\{([^,]+),", (ROOT / "references.bib").read_text()))
    sources = [p.read_text() for p in BOOK.iterdir() if p.suffix in PAGE_SUFFIXES]
    cited = {
        key.strip()
        for text in sources
        for group in re.findall(r"(?<!`)\{cite(?::[pt])?\}`([^`]+)`", text)
        for key in group.split(",")
    }
    assert cited, "the book cites nothing"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def _notebooks_to_check() -> list[Path]:
    return sorted(set(toc_notebooks()) | {BOOK / "_template.ipynb"})


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.parametrize("path", _notebooks_to_check(), ids=lambda p: p.name)
def test_notebook_conventions(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"cell {i} is stored with outputs"
            assert cell.get("execution_count") is None, f"cell {i} has an execution count"

    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith("# "), (
        "cell 0 must be the title (a markdown cell starting with '# ')"
    )
    title = _source(cells[0]).lower()
    assert "quick" in title and "standard" in title, "cell 0 must state the run time of each mode"

    code = [c for c in cells if c["cell_type"] == "code"]
    bootstrap, parameters = code[0], code[1]
    boot = _source(bootstrap)
    assert 'find_spec("sam_tutorial")' in boot and "%pip install" in boot
    assert f"git+{repository_url()}" in boot, "bootstrap must install from _config.yml's repository"

    assert "parameters" in parameters.get("metadata", {}).get("tags", [])
    assert re.search(r"print\(\s*config\.banner\(\)\s*\)", _source(parameters))


def test_api_page_documents_every_module_of_the_package() -> None:
    """book/api.md is what tools/api_page.py writes from the package tree (one automodule per module)."""
    script = ROOT / "tools" / "api_page.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    page = (ROOT / "book" / "api.md").read_text()
    for path in (ROOT / "sam_tutorial").rglob("*.py"):
        if path.name.startswith("_"):
            continue
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        assert f".. automodule:: {module}\n" in page, module
