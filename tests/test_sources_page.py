"""book/sources.md: the paper's numbers it lists are exactly those of sam_tutorial.published, and the page
names no file outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from sam_tutorial import published

PAGE = Path(__file__).resolve().parents[1] / "book" / "sources.md"


def _numbers_section() -> str:
    text = PAGE.read_text()
    return text[text.index("## The paper's numbers"):text.index("**Cost**")]


def test_the_pages_tables_are_the_published_numbers() -> None:
    on_page = sorted(float(x) for x in re.findall(r"\d+\.\d+", _numbers_section()))
    stored = [v for table in (published.TABLE1, published.TABLE2, published.TABLE4) for row in table.values()
              for v in row]
    stored += [v for row in published.TABLE6.values() for v in row]
    assert on_page == sorted(stored)
    noise = sorted(int(x) for x in re.findall(r"\| (\d+)% \|", _numbers_section()))
    assert noise == sorted(round(100 * q) for q in published.TABLE4)


def test_the_page_is_in_the_table_of_contents_and_points_inside_the_repository() -> None:
    toc = (PAGE.parents[1] / "_toc.yml").read_text()
    assert "file: book/sources" in toc
    text = PAGE.read_text()
    for outside in ("reference/", "paper.md", "shared/", "/work/"):
        assert outside not in text
