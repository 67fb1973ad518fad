"""Open every page of the built book in headless Chromium, as a reader would, with no network.

Usage (``make browser-check`` runs it on ``_build/html``)::

    python tools/browser_check.py [--html _build/html] [--out _build/screenshots]

It builds nothing. For every HTML page of the book (not the ``_static``, ``_sources``, ``_images`` and
``_modules`` folders: the last holds syntax-highlighted package source, not book pages) it

* blocks every request that is not a ``file://`` URL, so the page renders as it would offline;
* waits for MathJax to finish typesetting;
* fails the page if its rendered text (code blocks and cell outputs in ``<pre>`` excluded) still shows
  raw TeX delimiters (``\\(``, ``\\)``, ``\\[``, ``\\]``, ``$$``, or ``$\\command``) or a raw Markdown
  pipe table (a ``|---|`` separator row), if it has math but MathJax produced no output for some of it
  or reported a TeX error, or if an image did not load;
* saves a full-page screenshot to ``<out>/<page path with / replaced by __>.png``.

Blocked requests are listed (the Colab and repository links are never requested; ipywidgets' embedder
asks a CDN for its scripts, so widgets need a live kernel, as the chapters say). A JSON report is
written to ``<out>/report.json``. The exit status is 1 if any page fails.

Needs the Python package ``playwright`` (its driver ships in the wheel; no browser download) and
Debian's ``chromium`` (``apt-get install -y chromium``), found at ``--chromium`` or on ``PATH``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

SKIP_DIRS = {"_static", "_sources", "_images", "_modules", "_downloads"}
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html"}

RAW_TEX = re.compile(r"\\\(|\\\)|\\\[|\\\]|\$\$|\$\\[A-Za-z]+")
RAW_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\|")

# Text the reader sees, without code, cell outputs in <pre>, typeset math and scripts.
VISIBLE_TEXT_JS = """
() => {
  const body = document.body.cloneNode(true);
  const hidden = 'pre, code, script, style, mjx-container, mjx-assistive-mml, .MathJax, noscript, textarea';
  body.querySelectorAll(hidden).forEach(e => e.remove());
  return body.innerText;
}
"""

PAGE_FACTS_JS = """
() => {
  // each TeX error with its message and the TeX source MathJax was given
  const texErrors = () => {
    const bad = Array.from(document.querySelectorAll('mjx-merror'));
    if (!bad.length) return [];
    const items = (window.MathJax && MathJax.startup && MathJax.startup.document)
        ? Array.from(MathJax.startup.document.math) : [];
    return bad.map(e => {
      const box = e.closest('mjx-container');
      const item = items.find(m => m.typesetRoot === box);
      const message = (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 60);
      return message + (item ? ' in ' + item.math.slice(0, 80) : '');
    });
  };
  const math = Array.from(document.querySelectorAll('.math, span.math, div.math'));
  const untypeset = math.filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80));
  const images = Array.from(document.images).map(
      i => ({src: i.getAttribute('src') || '', ok: i.complete && i.naturalWidth > 0}));
  return {
    math: math.length,
    typeset: document.querySelectorAll('mjx-container').length,
    untypeset: untypeset,
    tex_errors: texErrors(),
    images: images,
    mathjax_loaded: typeof window.MathJax === 'object' && !!window.MathJax.startup,
  };
}
"""

WAIT_MATHJAX_JS = """
async () => {
  if (!document.querySelector('.math')) return 'no math';
  const ready = () => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise;
  for (let i = 0; i < 200 && !ready(); i++) await new Promise(r => setTimeout(r, 50));
  if (!ready()) return 'mathjax missing';
  await window.MathJax.startup.promise;
  return 'typeset';
}
"""


def pages(html: Path) -> list[Path]:
    found = []
    for path in sorted(html.rglob("*.html")):
        rel = path.relative_to(html)
        if rel.parts[0] in SKIP_DIRS or rel.name in SKIP_PAGES:
            continue
        if rel.as_posix() == "index.html" and "http-equiv=\"Refresh\"" in path.read_text(errors="ignore"):
            continue   # the redirect to the book's first page
        found.append(path)
    return found


def find_chromium(given: str | None) -> str:
    for candidate in (given, "chromium", "chromium-browser", "google-chrome"):
        if candidate and (shutil.which(candidate) or Path(candidate).is_file()):
            return shutil.which(candidate) or candidate
    sys.exit("browser-check: Chromium not found. Install Debian's package: apt-get install -y chromium")


def snippets(pattern: re.Pattern[str], text: str, limit: int = 3) -> list[str]:
    out = []
    for match in pattern.finditer(text):
        start = max(0, match.start() - 40)
        out.append(text[start : match.end() + 40].replace("\n", " "))
        if len(out) == limit:
            break
    return out


def check_page(page, path: Path, html: Path, out: Path, timeout_ms: int) -> dict:
    rel = path.relative_to(html).as_posix()
    blocked: list[str] = []
    page.unroute("**/*")

    def route(r):
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.resolve().as_uri(), wait_until="load", timeout=timeout_ms)
    state = page.evaluate(WAIT_MATHJAX_JS)
    page.wait_for_timeout(200)
    facts = page.evaluate(PAGE_FACTS_JS)
    text = page.evaluate(VISIBLE_TEXT_JS)
    problems = []
    if state == "mathjax missing":
        problems.append("the page has math but MathJax did not load")
    if facts["math"] and not facts["typeset"]:
        problems.append(f"MathJax produced no output for {facts['math']} math elements")
    elif facts["untypeset"]:
        problems.append(f"{len(facts['untypeset'])} math elements not typeset, e.g. {facts['untypeset'][:2]}")
    if facts["tex_errors"]:
        problems.append(f"TeX errors: {facts['tex_errors'][:3]}")
    if raw := snippets(RAW_TEX, text):
        problems.append(f"raw TeX in the rendered text: {raw}")
    if raw := snippets(RAW_TABLE, text):
        problems.append(f"raw Markdown table in the rendered text: {raw}")
    missing = [i["src"] for i in facts["images"] if not i["ok"]]
    if missing:
        problems.append(f"{len(missing)} images missing: {missing[:3]}")
    shot = out / (rel.replace("/", "__").removesuffix(".html") + ".png")
    page.screenshot(path=str(shot), full_page=True, timeout=4 * timeout_ms)
    return {"page": rel, "ok": not problems, "problems": problems, "math": facts["math"],
            "typeset": facts["typeset"], "images": len(facts["images"]), "blocked": sorted(set(blocked)),
            "screenshot": str(shot)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=Path("_build/html"), help="the built book")
    parser.add_argument("--out", type=Path, default=None, help="screenshots (default: <html>/../screenshots)")
    parser.add_argument("--chromium", default=None, help="path of the Chromium binary")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per page")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in pixels")
    args = parser.parse_args(argv)
    html = args.html
    if not (html / "index.html").is_file():
        sys.exit(f"browser-check: no built book at {html} (run `make book` first); this check builds nothing")
    out = args.out or html.parent / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("browser-check: needs the Python package playwright (pip install playwright)")
    todo = pages(html)
    results = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(args.chromium), headless=True,
                                     args=["--no-sandbox", "--allow-file-access-from-files"])
        context = browser.new_context(viewport={"width": args.width, "height": 900}, offline=True)
        page = context.new_page()
        for path in todo:
            try:
                result = check_page(page, path, html, out, int(args.timeout * 1000))
            except Exception as exc:  # a page that cannot be opened is a failure, not a crash
                result = {"page": path.relative_to(html).as_posix(), "ok": False,
                          "problems": [f"{type(exc).__name__}: {exc}"], "blocked": []}
            results.append(result)
            status = "ok  " if result["ok"] else "FAIL"
            extra = (f"  math {result.get('typeset', 0)}/{result.get('math', 0)},"
                     f" images {result.get('images', 0)}")
            if result["blocked"]:
                extra += f", {len(result['blocked'])} non-file requests blocked"
            print(f"{status} {result['page']}{extra}")
            for problem in result["problems"]:
                print(f"       {problem}")
        browser.close()
    (out / "report.json").write_text(json.dumps(results, indent=1))
    failed = [r for r in results if not r["ok"]]
    print(f"browser-check: {len(results)} pages, {len(failed)} failed; screenshots in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
