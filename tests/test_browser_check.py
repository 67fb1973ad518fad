"""tools/browser_check.py without a browser: what counts as raw TeX or a raw table, and which pages
it opens."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("browser_check", ROOT / "tools" / "browser_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["browser_check"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "text", ["the value $$x^2$$", r"inline \(a+b\)", r"display \[x\]", r"costs $\rho$ here"]
)
def test_raw_tex_is_found(bc, text: str) -> None:
    assert bc.RAW_TEX.search(text)


@pytest.mark.parametrize("text", ["it costs $5", "a plain sentence (with brackets) [1]", "USD 3$ and 4$"])
def test_prose_is_not_raw_tex(bc, text: str) -> None:
    assert not bc.RAW_TEX.search(text)


def test_raw_pipe_table_is_found(bc) -> None:
    assert bc.RAW_TABLE.search("| a | b |\n|---|:--:|\n| 1 | 2 |")
    assert not bc.RAW_TABLE.search("a | b, and a rule ---")


def test_pages_skip_assets_and_the_redirect(bc, tmp_path: Path) -> None:
    (tmp_path / "book").mkdir()
    (tmp_path / "_static").mkdir()
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/intro.html" />')
    for name in ("book/intro.html", "_static/x.html", "search.html", "genindex.html"):
        (tmp_path / name).write_text("<html></html>")
    assert [p.relative_to(tmp_path).as_posix() for p in bc.pages(tmp_path)] == ["book/intro.html"]
