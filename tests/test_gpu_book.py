"""tools/gpu_book.py and tools/colab_check.py on the CPU: the driver that executes the chapters on a GPU
(``make gpu-book``) runs small notebooks here with ``--device cpu``, and the Colab check's environment
layering keeps the checkout out of a chapter's reach. The CUDA run itself needs a GPU machine."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_gpu_book_records_each_chapter_with_provenance(tmp_path: Path) -> None:
    gpu_book = _tool("gpu_book")
    good = _notebook(tmp_path / "a_good.ipynb",
                     "import os\nfrom sam_tutorial import config",
                     "assert str(config.device()) == os.environ['SAM_TUTORIAL_DEVICE'] == 'cpu'\n"
                     "assert os.listdir('.') == ['a_good.ipynb'], os.listdir('.')  # alone in its folder\n"
                     "import torch\nprint(float(torch.ones(3, device=config.device()).sum()))")
    bad = _notebook(tmp_path / "b_bad.ipynb", "x = 1", "raise ValueError('boom in cell two')")
    out = tmp_path / "out" / "gpu-book.json"
    status = gpu_book.main([str(good), str(bad), "--device", "cpu", "--mode", "quick", "--json", str(out),
                            "--cell-timeout", "120"])
    assert status == 1  # one chapter failed
    result = json.loads(out.read_text())
    ok, failed = result["notebooks"]
    assert (ok["notebook"], ok["ok"], ok["error"]) == ("a_good.ipynb", True, "")
    assert len(ok["cell_seconds"]) == 2 and ok["seconds"] >= sum(ok["cell_seconds"]) - 0.5
    assert failed["notebook"] == "b_bad.ipynb" and not failed["ok"] and "boom in cell two" in failed["error"]
    prov = result["provenance"]
    assert prov["mode"] == "quick" and prov["device"].startswith("cpu") and prov["torch"]
    assert set(prov) >= {"command", "commit", "date", "device", "torch", "cuda", "python"}
    executed = nbformat.read(out.parent / "a_good.ipynb", as_version=4)  # kept, with its outputs
    assert executed.cells[1].outputs[0]["text"].strip() == "3.0"


def test_gpu_book_names_what_the_interpreter_lacks(tmp_path: Path, monkeypatch) -> None:
    gpu_book = _tool("gpu_book")
    monkeypatch.setattr(gpu_book, "NEEDED", (*gpu_book.NEEDED, "no_such_module_for_the_test"))
    out = tmp_path / "gpu-book.json"
    nb = _notebook(tmp_path / "n.ipynb", "raise SystemExit('must not run')")
    assert gpu_book.main([str(nb), "--device", "cpu", "--json", str(out)]) == 1
    result = json.loads(out.read_text())
    assert result["missing"] == ["no_such_module_for_the_test"] and result["notebooks"] == []


def test_colab_layered_environment_sees_the_base_packages_but_not_the_checkout(tmp_path: Path) -> None:
    colab = _tool("colab_check")
    base = tmp_path / "base-site"
    base.mkdir()
    (base / "colab_base_module.py").write_text("VALUE = 42\n")
    py = colab.layered_environment(tmp_path / "env", base, sys.executable)
    env = colab.kernel_env(py, tmp_path, "file:///nowhere", tmp_path / "wheels", "quick")
    assert env["PIP_NO_INDEX"] == "1" and env["SAM_TUTORIAL_MODE"] == "quick"
    assert not {"PYTHONPATH", "SAM_TUTORIAL_RUNS"} & set(env)
    code = ("import colab_base_module, importlib.util, sys\n"
            "print(colab_base_module.VALUE, importlib.util.find_spec('sam_tutorial'), sys.prefix)")
    done = subprocess.run([str(py), "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          check=True)
    value, spec, prefix = done.stdout.split()
    assert (value, spec) == ("42", "None")  # the base's packages, and no sam_tutorial
    assert Path(prefix) == tmp_path / "env"  # pip would install into the chapter's own environment


def test_colab_source_copy_is_what_a_clone_holds(tmp_path: Path) -> None:
    colab = _tool("colab_check")
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    src = colab.source_copy(tmp_path / "src")
    assert (src / "pyproject.toml").read_bytes() == (ROOT / "pyproject.toml").read_bytes()
    assert (src / "sam_tutorial" / "results" / "m-sharpness-cnn.json").is_file()
    assert not (src / ".venv").exists() and not (src / "_build").exists()
