"""Where readers run a chapter: Colab (through the launch button) or any folder, from the notebook alone.

Every notebook's bootstrap cell installs the package with the extras the chapter needs from
``git+config.REPOSITORY`` (``$SAM_TUTORIAL_INSTALL`` overrides it), ``_config.yml`` and ``pyproject.toml``
name the same repository, and the launch button's Colab URL points at a notebook that exists. That the
bootstrap really suffices is what ``make colab-check`` (``tools/colab_check.py``) executes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from sam_tutorial import config

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def bootstrap_cell(extras: tuple[str, ...]) -> str:
    """The exact source of a chapter's bootstrap cell that installs ``sam_tutorial[extras]``."""
    return (
        "# Bootstrap: on Colab or in a fresh kernel, install the package with the extras this chapter needs\n"
        f"# if it is missing. ${config.INSTALL_ENV} overrides where from (a fork, a tag, a local checkout).\n"
        "import importlib.util\n"
        "import os\n"
        "\n"
        'if importlib.util.find_spec("sam_tutorial") is None:\n'
        f'    source = os.environ.get("{config.INSTALL_ENV}", "git+{config.REPOSITORY}")\n'
        f'    %pip install --quiet "sam_tutorial[{",".join(extras)}] @ {{source}}"\n'
        "    importlib.invalidate_caches()"
    )


def _code(nb: dict[str, Any]) -> str:
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def needed_extras(nb: dict[str, Any]) -> tuple[str, ...]:
    """``notebook`` (matplotlib, ipywidgets) for every chapter, ``data`` (mnist1d) for a chapter that loads a
    data set or trains through the catalogue (whose book experiments run on MNIST-1D)."""
    code = _code(nb)
    return ("notebook", "data") if ("load_dataset" in code or "run_experiment" in code) else ("notebook",)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_bootstrap_installs_the_extras_from_the_repository(path: Path) -> None:
    nb = json.loads(path.read_text())
    boot = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert "".join(boot["source"]) == bootstrap_cell(needed_extras(nb))


def test_no_chapter_needs_myst_nb() -> None:
    """Chapters glue through sam_tutorial.chapters.glue, which works without myst-nb (Colab)."""
    for path in NOTEBOOKS:
        code = _code(json.loads(path.read_text()))
        assert not re.search(r"^\s*(from|import) myst_nb", code, re.M), path.name


def test_one_repository_url() -> None:
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert cfg["repository"]["url"] == config.REPOSITORY
    assert project["urls"]["Repository"] == config.REPOSITORY


def colab_url(page: str) -> str:
    """The launch button's Colab URL of ``page`` (e.g. ``book/01_sam_family``) as sphinx-book-theme builds it
    from ``_config.yml``: ``{colab_url}/github/{org}/{repo}/blob/{branch}/{path_to_book}{page}.ipynb``."""
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = cfg["repository"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+)", repo["url"])
    assert match, f"repository.url must be https://github.com/<org>/<repo>, got {repo['url']!r}"
    book = (repo.get("path_to_book") or "").strip("/")
    prefix = f"{book}/" if book else ""
    base = cfg["launch_buttons"]["colab_url"].rstrip("/")
    return f"{base}/github/{match[1]}/{match[2]}/blob/{repo['branch']}/{prefix}{page}.ipynb"


def test_launch_button_opens_the_chapter_of_the_configured_repository() -> None:
    """The URL built from the configuration names the repository of config.REPOSITORY and a notebook
    that exists at that path in this checkout (what Colab fetches from GitHub)."""
    org_repo = config.REPOSITORY.removeprefix("https://github.com/")
    for path in NOTEBOOKS:
        url = colab_url(f"book/{path.stem}")
        assert url.startswith(f"https://colab.research.google.com/github/{org_repo}/blob/main/")
        relative = url.split("/blob/main/", 1)[1]
        assert (ROOT / relative).is_file(), url


def test_recorded_results_ship_with_the_package_and_a_local_folder_overrides(tmp_path, monkeypatch) -> None:
    from sam_tutorial.engine.recorded import find_result, packaged_results, results_folder

    packaged = packaged_results()
    shipped = sorted(p.name for p in packaged.glob("*.json"))
    assert "m-sharpness-cnn.json" in shipped and "rw-study-compare-paper.json" in shipped
    assert packaged.parent == Path(config.__file__).resolve().parent  # inside the package, not the repository
    monkeypatch.chdir(tmp_path)  # an empty folder, as on Colab: the packaged files are found
    assert results_folder() == packaged
    assert find_result("bench-cpu.json") == packaged / "bench-cpu.json"
    local = tmp_path / "results"
    local.mkdir()
    (local / "bench-cpu.json").write_text("{}")
    assert results_folder() == local
    assert find_result("bench-cpu.json") == local / "bench-cpu.json"  # the local file wins ...
    assert find_result("m-sharpness-cnn.json") == packaged / "m-sharpness-cnn.json"  # ... for its name only
    with pytest.raises(FileNotFoundError, match="no-such.json"):
        find_result("no-such.json")


def test_package_data_lists_the_results() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "results/*.json" in data["sam_tutorial"]
    assert not (ROOT / "results").exists(), "recorded results live in sam_tutorial/results (package data)"
