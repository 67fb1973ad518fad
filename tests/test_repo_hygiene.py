"""The repository stands alone: the package, the tests, the tools and the book point at no file outside
it (a working directory, a sibling checkout, notes that are not shipped) and cite no issue tracker
number (a reader of a clone has neither). The repository files a citation needs are present."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("sam_tutorial", "tests", "tools", "book")
TOP_LEVEL = ("README.md", "ARCHITECTURE.md", "_config.yml", "_toc.yml", "Makefile", "pyproject.toml")
SUFFIXES = {".py", ".md", ".ipynb", ".yml", ".yaml", ".toml", ".txt", ".bib", ".cfg", ""}

# Built from pieces so that this file does not match itself.
OUTSIDE = re.compile("|".join((
    r"(?<![\w./-])" + "shared" + r"/(?=[\w.])",            # a sibling folder of notes and reviews
    "reference" + r"/paper\.md",                           # the notes on the paper kept outside
    r"(?<![\w.])/" + "work" + r"/(?=[\w.])",               # an absolute path of one machine
)))
ISSUE = re.compile(r"\b" + "issue" + r"s?\s*(?:#\s*)?\d+|(?<![\w&])#\d{1,4}\b(?![0-9a-fA-F])", re.IGNORECASE)
PARENT = re.compile(r"(?:\.\./)+")


def scanned_files() -> list[Path]:
    files = [ROOT / name for name in TOP_LEVEL if (ROOT / name).exists()]
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*")):
            if not path.is_file() or path.suffix not in SUFFIXES or "__pycache__" in path.parts:
                continue
            if path.name == "api.md" or any(part.startswith(("_build", ".")) for part in path.parts[-3:]):
                continue
            files.append(path)
    return files


def text_of(path: Path) -> str:
    """The text a reader sees: for a notebook, its cells' sources (outputs are not stored)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".ipynb":
        cells = json.loads(text)["cells"]
        return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                         for c in cells)
    return text


def escapes(path: Path, text: str) -> list[str]:
    """Relative paths (``../``) that climb above the repository root from where ``path`` is."""
    depth = len(path.relative_to(ROOT).parts) - 1
    return [m.group(0) for m in PARENT.finditer(text) if m.group(0).count("../") > depth]


def findings() -> list[str]:
    out = []
    for path in scanned_files():
        if path == Path(__file__).resolve():
            continue
        rel = path.relative_to(ROOT)
        for number, line in enumerate(text_of(path).splitlines(), 1):
            for pattern, what in ((OUTSIDE, "a file outside the repository"), (ISSUE, "an issue number")):
                match = pattern.search(line)
                if match:
                    out.append(f"{rel}:{number}: {what}: {match.group(0)!r}")
            for up in escapes(path, line):
                out.append(f"{rel}:{number}: a path above the repository root: {up!r}")
    return out


def test_no_reference_outside_the_repository_and_no_issue_numbers() -> None:
    found = findings()
    assert not found, "\n".join(found)


@pytest.mark.parametrize(("line", "bad"), [
    ("see ``shared/reference/x.md`` for", True),
    ("Source: reference/paper.md §9", True),
    ("open /work/notes/x", True),
    ("--out /shared/runs on a cluster", False),
    ('for outside in ("shared/", "/work/"):', False),  # a test that looks for them names no file
    ("Bad input (issue 14, the engine)", True),
    ("fixed in Issue #3", True),
    ("as in #12 above", True),
    ("the probe is shared by the batch", False),
    ("colour #1f77b4 and #4d4d4d", False),
    ("a tissue 4 cm", False),
])
def test_the_patterns_catch_what_they_should(line: str, bad: bool) -> None:
    assert bool(OUTSIDE.search(line) or ISSUE.search(line)) is bad


def test_relative_paths_may_not_climb_out() -> None:
    book_page = ROOT / "book" / "x.md"
    assert escapes(book_page, "[readme](../README.md)") == []
    assert escapes(book_page, "[notes](../../notes.md)") == ["../../"]


def test_license_and_citation_match_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    yaml = pytest.importorskip("yaml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == project["version"] and cff["license"] == project["license"]
    paper = cff["preferred-citation"]
    assert paper["url"] == project["urls"]["Paper"]
    assert [a["family-names"] for a in paper["authors"]] == ["Luo", "Harandi", "Phung", "Le"]


# ----------------------------------------------------------------------------- back-links
BACKLINKED = ("optim", "sgn", "curvature", "theory")
BACKLINK = re.compile(r"^\s*(Book|Paper):", re.MULTILINE)
SECTION = re.compile(r'chapter (\d+), "([^"]+)"')
PAPER_ITEM = re.compile(r"§\s?\d|Eq\. \(\d+\)|Thms?\. 3\.\d|Prop\. 3\.9|Def\. 3\.2|claims? C\d+|Table \d")


def public_definitions() -> list[tuple[str, object]]:
    """Every function and class a module of the four mathematical subpackages exports in ``__all__``."""
    import importlib
    import pkgutil

    out = []
    for sub in BACKLINKED:
        package = importlib.import_module(f"sam_tutorial.{sub}")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"sam_tutorial.{sub}.{info.name}")
            for name in getattr(module, "__all__", []):
                obj = getattr(module, name)
                if callable(obj) and getattr(obj, "__module__", None) == module.__name__:
                    out.append((f"{module.__name__}.{name}", obj))
    return out


def book_headings() -> dict[int, list[str]]:
    """The Markdown headings of each chapter notebook ``book/0N_*.ipynb``, by N."""
    out: dict[int, list[str]] = {}
    for path in sorted((ROOT / "book").glob("0[0-9]_*.ipynb")):
        heads = re.findall(r"^#{1,4}\s+(.+)$", text_of(path), re.MULTILINE)
        out[int(path.name[:2])] = [h.strip() for h in heads]
    return out


def backlink(doc: str) -> str | None:
    """The back-link paragraph of a docstring (joined into one line), or None."""
    match = BACKLINK.search(doc)
    if match is None:
        return None
    paragraph = doc[match.start():].split("\n\n")[0]
    return " ".join(paragraph.split())


def test_public_definitions_link_back_to_the_book_or_the_paper() -> None:
    """d2l's "defined in section ..." habit: at least 90 % of the public functions and classes of optim,
    sgn, curvature and theory carry a ``Book:`` / ``Paper:`` paragraph; every one that does names a
    chapter section that exists (``chapter N, "heading"``, a prefix of a heading of that chapter) or an
    item of the paper (§, Eq., Thm., Prop., Def., a claim, a table)."""
    headings = book_headings()
    defs = public_definitions()
    linked, broken = 0, []
    for name, obj in defs:
        link = backlink(obj.__doc__ or "")
        if link is None:
            continue
        linked += 1
        sections = SECTION.findall(link)
        if not sections and not PAPER_ITEM.search(link):
            broken.append(f"{name}: names neither a chapter section nor a paper item: {link}")
        for chapter, title in sections:
            if not any(h.startswith(title) for h in headings.get(int(chapter), [])):
                broken.append(f"{name}: chapter {chapter} has no section {title!r}")
    assert not broken, "\n".join(broken)
    missing = [name for name, obj in defs if backlink(obj.__doc__ or "") is None]
    assert linked >= 0.9 * len(defs), f"{linked} of {len(defs)} link back; missing: {', '.join(missing)}"


def test_backlink_parsing() -> None:
    doc = 'Summary.\n\n    Book: chapter 2, "The SGN\n    covariance"; paper: §3.5.\n\n    Args: ...'
    assert backlink(doc) == 'Book: chapter 2, "The SGN covariance"; paper: §3.5.'
    assert SECTION.findall(backlink(doc) or "") == [("2", "The SGN covariance")]
    assert backlink("Summary without a link.") is None


# ----------------------------------------------------------------------------- the maps stay true
SUBPACKAGES = ("optim", "sgn", "curvature", "theory", "engine", "engine/catalog", "chapters", "reproduction")


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_every_module_is_in_its_subpackage_docstring(sub: str) -> None:
    """The table in each subpackage's ``__init__`` docstring names every public module (and
    sub-package) of it, so the map a newcomer reads first cannot drift from the tree."""
    folder = ROOT / "sam_tutorial" / sub
    if not folder.is_dir():
        pytest.skip(f"sam_tutorial/{sub} does not exist")
    init = folder / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    members = sorted(p.stem for p in folder.glob("*.py") if not p.name.startswith("_"))
    members += sorted(p.name for p in folder.iterdir() if (p / "__init__.py").is_file())
    missing = [m for m in members if f"``{m}``" not in doc and f".{m}`" not in doc]  # a table or :mod:
    assert not missing, f"sam_tutorial/{sub}/__init__.py does not describe: {', '.join(missing)}"


def test_architecture_names_every_subpackage_and_leaf() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    package = ROOT / "sam_tutorial"
    parts = [p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    parts += [p.name for p in package.glob("*.py")]
    missing = [p for p in parts if p not in text]
    assert not missing, f"ARCHITECTURE.md does not mention: {', '.join(sorted(missing))}"
