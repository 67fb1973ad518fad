"""The UNCONFIRMED register: every choice the book and the package had to reconstruct because the paper's
text was not available, with its default (read from the code), the option that changes it, and the chapter
that discusses it; and a scan of every place the package and the chapters say UNCONFIRMED.

>>> rows = register()
>>> next(r for r in rows if r["option"].startswith("RWSAM(weighted_descent"))["default"]
'False'
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHOICES", "SELF", "Choice", "Mention", "register", "scan"]


@dataclass(frozen=True)
class Choice:
    """One reconstructed choice: what it is, the option, where its default is read, the chapter."""

    choice: str
    option: str
    default: Callable[[], Any]
    chapter: str


def _sig(path: str, name: str) -> Callable[[], Any]:
    """A reader of the default of parameter ``name`` of the callable at ``module:qualname``."""

    def read() -> Any:
        import importlib

        from sam_tutorial.reproduction.paper_runs import default_of

        module, qual = path.split(":")
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
        return default_of(obj, name)

    return read


def _setting(key: str) -> Callable[[], Any]:
    def read() -> Any:
        from sam_tutorial.reproduction.paper_runs import assumed_settings

        return ", ".join(sorted(assumed_settings().get(key, {"—"})))

    return read


def _paper_model() -> str:
    from sam_tutorial.engine.experiments import get_experiment

    found = {
        f"{s.tags['model']} on {s.tags['dataset']}"
        for name in ("table4-noise20", "table6-resnet18-cifar10")
        for s in get_experiment(name).runs("paper")
    }
    return ", ".join(sorted(found))


def _const(text: str) -> Callable[[], Any]:
    return lambda: text


def _deciding(name: str) -> Callable[[], Any]:
    """A reader of a constant of the deciding experiments (``engine/catalog/deciding.py``)."""

    def read() -> Any:
        from sam_tutorial.engine.catalog import deciding

        if name == "rho":
            from sam_tutorial.engine.experiments import get_experiment

            specs = [spec for exp in deciding.DECIDING for spec in get_experiment(exp).runs("paper")]
            found = {f"{spec.train.rho} ({spec.data.name})" for spec in specs
                     if spec.train.optimizer in ("m-sam", "n-sam")}
            return ", ".join(sorted(found))
        if name == "lam":
            target = deciding.RW_TARGET
            return (f"scores standardised, effective batch {target} of 128: "
                    f"λ = {deciding.lam_for_effective_batch(128, target):.2f}")
        return getattr(deciding, name)

    return read


_RW = "sam_tutorial.optim.rwsam:RWSAM.__init__"
_SDE = "sam_tutorial.theory.sde:drift"

CHOICES: tuple[Choice, ...] = (
    Choice(
        "RW-SAM's descent pass: uniform batch mean or Gibbs-weighted",
        "RWSAM(weighted_descent=...)",
        _sig(_RW, "weighted_descent"),
        "5",
    ),
    Choice(
        "RW-SAM's finite-difference step δ (the probe radius ‖δz‖)",
        "RWSAM(delta=...), TrainConfig(delta=...)",
        _sig(_RW, "delta"),
        "5",
    ),
    Choice("RW-SAM's probe distribution", "RWSAM(probe=...)", _sig(_RW, "probe"), "5"),
    Choice(
        "RW-SAM's probe scaling (unit-norm u instead of ±1 entries)",
        "RWSAM(normalize_probe=...)",
        _sig(_RW, "normalize_probe"),
        "5",
    ),
    Choice("RW-SAM's number of probes", "RWSAM(n_probes=...)", _sig(_RW, "n_probes"), "5"),
    Choice("RW-SAM's score: |Δℓ|/δ or its square", "RWSAM(transform=...)", _sig(_RW, "transform"), "5"),
    Choice(
        "RW-SAM's scores standardised before the softmax",
        "RWSAM(standardize=...)",
        _sig(_RW, "standardize"),
        "5",
    ),
    Choice("RW-SAM's weights mixed with uniform ones", "RWSAM(mix=...)", _sig(_RW, "mix"), "5"),
    Choice(
        "RW-SAM's temperature λ in the paper's runs",
        "TrainConfig(lam=...) in engine/catalog/paper.py",
        _setting("lam"),
        "5 (λ sweep), 6",
    ),
    Choice("SAM radius ρ of the paper's runs", "engine/catalog/paper.py (_paper_runs)", _setting("rho"), "6"),
    Choice("epochs of the paper's runs", "engine/catalog/paper.py (_paper_runs)", _setting("epochs"), "6"),
    Choice("batch size of the paper's runs", "engine/catalog/paper.py", _setting("batch_size"), "6"),
    Choice(
        "peak learning rate (cosine, per step) of the paper's runs",
        "engine/catalog/paper.py",
        _setting("lr"),
        "6",
    ),
    Choice(
        "momentum / weight decay of the paper's runs",
        "engine/catalog/paper.py",
        lambda: f"{_setting('momentum')()} / {_setting('weight_decay')()}",
        "6",
    ),
    Choice(
        "augmentation (random crop, padding 4, flip) of the paper's runs",
        "TrainConfig(augment=...)",
        _setting("augment"),
        "6",
    ),
    Choice("seeds of the paper's runs", "PAPER_SEEDS in engine/catalog/paper.py", _setting("seeds"), "6"),
    Choice(
        "model and data set of Tables 4 and 6",
        "engine/catalog/paper.py (_table4_runs, _table6_runs)",
        _paper_model,
        "6",
    ),
    Choice(
        "samples tr V is measured on (Table 6)",
        "TrainConfig(metric_samples=...)",
        _setting("metric_samples"),
        "5, 6",
    ),
    Choice(
        "label-noise model (Table 4): a corrupted label moves to another class, or to any class",
        "DataSpec(label_noise_kind=...), load_dataset(label_noise_kind=...)",
        _sig("sam_tutorial.engine.data:load_dataset", "label_noise_kind"),
        "5, 6",
    ),
    Choice(
        "the SDE's order: keep the O(η) term η/4‖∇f‖² in the drift",
        "sde.drift(include_eta_term=...)",
        _sig(_SDE, "include_eta_term"),
        "3",
    ),
    Choice(
        "sampling scheme of the theorems (c_B with or without replacement)",
        "sde.drift(replacement=...), batch_noise_coefficient(replacement=...)",
        _sig(_SDE, "replacement"),
        "2, 3",
    ),
    Choice("O(ρ) corrections to the diffusion matrices", "none (left out)", _const("left out"), "3"),
    Choice("which of Theorems 3.6–3.8 covers which SAM variant", "none (documentation)", _const("—"), "3, 4"),
    Choice("exact form of Definition 3.2 (weak approximation)", "none (documentation)", _const("—"), "3"),
    Choice(
        "hypothesis of Proposition 3.9's strictness (log-concavity)",
        "none (documentation)",
        _const("—"),
        "2, 3",
    ),
    Choice(
        "setup of Figs. 1–2 (escape from a sharp solution)",
        "the `escape` experiment",
        _const("MNIST-1D MLP"),
        "4",
    ),
    Choice("m of m-SAM at paper scale (m-sweep, escape)", "M_VALUES in engine/catalog/deciding.py",
           _deciding("M_VALUES"), "6"),
    Choice("m-SAM's and n-SAM's radius at paper scale: SAM's ρ for every m",
           "engine/catalog/deciding.py (_arm)", _deciding("rho"), "4, 6"),
    Choice("n-SAM's perturbation at paper scale: the gradient of the first n training samples",
           "NSAM_SAMPLES in engine/catalog/deciding.py", _deciding("NSAM_SAMPLES"), "6"),
    Choice("RW-SAM's λ at paper scale, in units of the batch's score spread", "RW_TARGET, "
           "lam_for_effective_batch in engine/catalog/deciding.py", _deciding("lam"), "5, 6"),
    Choice("Table 5's λ grid, as target effective batches", "LAMBDA_TARGETS in engine/catalog/deciding.py",
           _deciding("LAMBDA_TARGETS"), "6"),
    Choice("escape protocol at CIFAR scale (Figs. 1–2)", "ESCAPE in engine/catalog/deciding.py",
           _deciding("ESCAPE"), "6"),
)


def register(choices: Iterable[Choice] = CHOICES) -> list[dict[str, str]]:
    """The register as rows: choice, default (read from the code now), option, chapter."""
    return [
        {"choice": c.choice, "default": str(c.default()), "option": c.option, "chapter": c.chapter}
        for c in choices
    ]


@dataclass(frozen=True)
class Mention:
    """One place that says UNCONFIRMED: the file (relative), the line, and the sentence around it."""

    path: str
    line: int
    text: str


SELF = ("sam_tutorial/reproduction/unconfirmed.py", "book/06_reproduction.ipynb")
"""The register's own files, which name the word without being a reconstructed choice."""


def _context(line: str, width: int = 150) -> str:
    text = re.sub(r"\s+", " ", line).strip(" \"'`*-#>")
    at = text.find("UNCONFIRMED")
    start = max(0, min(at - width // 2, len(text) - width))
    return ("…" if start else "") + text[start : start + width] + ("…" if start + width < len(text) else "")


def scan(
    root: str | Path, folders: Iterable[str] = ("sam_tutorial", "book"), exclude: Iterable[str] = SELF
) -> list[Mention]:
    """Every line of the package (``*.py``) and the chapters (``*.ipynb`` sources, ``*.md``) under ``root``
    that says UNCONFIRMED, with about 150 characters around the word."""
    root = Path(root)
    skip = set(exclude)
    out = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if str(path.relative_to(root)) in skip or (path.suffix == ".ipynb" and path.name.startswith("_")):
                continue  # the chapter template and scratch notebooks are not chapters
            if path.suffix == ".ipynb":
                cells = json.loads(path.read_text())["cells"]
                lines = [line for cell in cells for line in "".join(cell["source"]).splitlines()]
            elif path.suffix in (".py", ".md"):
                lines = path.read_text().splitlines()
            else:
                continue
            for i, line in enumerate(lines, 1):
                if "UNCONFIRMED" in line:
                    before = lines[i - 2] if i > 1 else ""  # a wrapped sentence starts on the line above
                    out.append(Mention(str(path.relative_to(root)), i, _context(f"{before} {line}")))
    return out
