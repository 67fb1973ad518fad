"""The variant registry: one entry per member of the SAM family, read by everything that names them.

Each :class:`Variant` holds the variant's name (one spelling everywhere: training configuration, toy
recursions, benchmark keys, experiment labels, figures), the name the book prints, the optimizer class,
the constructor arguments that make this variant of the class, the settings a run chooses, small
example configurations and a figure colour. What is *derived* from :data:`REGISTRY`:

* the ``optimizer`` values of ``engine.train_config.TrainConfig`` and how it builds each one;
* the optimizers the benchmark times (``engine.bench.variants``);
* the figure colours (``chapters.plotting.COLORS``);
* the optimizer contract tests (``tests/optim/test_contract.py``, and the tables of ``test_base``,
  ``test_loops`` and ``test_gpu`` built from it), which sweep every example of every variant.

Adding an optimizer is therefore three files: its module ``optim/<name>.py``, its entry here, and its
own test ``tests/optim/test_<name>.py`` (ARCHITECTURE.md, "Where things go").

A *label* is a variant name followed by its settings, joined with hyphens: ``"m-sam-m16"``,
``"m-sam-m16-vmap"``, ``"rw-sam-noise40"``. :func:`variant_of` reads the variant back from a label,
:func:`display_name` gives the name the book prints and :func:`make` builds the optimizer.

>>> variant_of("m-sam-m16-loop"), display_name("m-sam-m16-loop")
('m-sam', 'm-SAM')
>>> variant_of("sam-noise20"), display_name("rw-usam")
('sam', 'RW-USAM')
>>> import torch
>>> model = torch.nn.Linear(3, 2)
>>> opt = make("m-usam", model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, m=4)
>>> type(opt).__name__, opt.normalize, opt.m
('MSAM', False, 4)
>>> label("m-sam", m=16, backend="vmap")
'm-sam-m16-vmap'
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.optim import Optimizer

from sam_tutorial.optim.base import PerturbedOptimizer
from sam_tutorial.optim.msam import MSAM
from sam_tutorial.optim.nsam import NSAM
from sam_tutorial.optim.rwsam import RWSAM
from sam_tutorial.optim.sam import SAM

__all__ = ["REGISTRY", "VARIANTS", "Variant", "display_name", "label", "make", "register", "variant_of"]


@dataclass(frozen=True)
class Variant:
    """One member of the SAM family.

    Book: chapter 1, "SAM and its family".

    Attributes:
        name: the one spelling (lower case, hyphenated: ``"m-usam"``).
        display: the name the book prints (``"m-USAM"``; a U marks the unnormalised perturbation).
        cls: the optimizer class (a :class:`~sam_tutorial.optim.base.PerturbedOptimizer`).
        fixed: constructor arguments that make this variant of ``cls`` (``usam``: ``normalize=False``;
            ``sgd``: ``rho=0``); they win over anything a caller passes.
        settings: the variant's own hyper-parameters that a run chooses (``m``; ``lam`` and ``delta``;
            ``data``, the data set n-SAM's perturbation uses, which callers supply).
        examples: small configurations by label suffix (``""`` is the plain name): settings beside
            ``rho`` (and ``data``) with which the contract tests and the benchmark build the variant.
        color: its colour in every figure.
        benchmark: whether the step-time benchmark times it (the unnormalised forms cost what their
            normalised forms cost, one norm less).
    """

    name: str
    display: str
    cls: type[PerturbedOptimizer]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    settings: tuple[str, ...] = ()
    examples: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"": {}})
    color: str = "#7f7f7f"
    benchmark: bool = True

    def __post_init__(self) -> None:
        accepted = set(inspect.signature(self.cls.__init__).parameters)
        for where, names in (("fixed", set(self.fixed)), ("settings", set(self.settings)),
                             *((f"examples[{k!r}]", set(v)) for k, v in self.examples.items())):
            unknown = sorted(names - accepted)
            if unknown:
                raise ValueError(f"variant {self.name!r}: {where} names {unknown}, which "
                                 f"{self.cls.__name__} does not take")

    def make(self, model: nn.Module, base: Optimizer, **kwargs: Any) -> PerturbedOptimizer:
        """The optimizer: ``cls(model, base, **kwargs)`` with ``fixed`` on top."""
        return self.cls(model, base, **{**kwargs, **self.fixed})

    def label(self, suffix: str = "") -> str:
        """``name`` or ``name-suffix`` (the label of one of ``examples``)."""
        return f"{self.name}-{suffix}" if suffix else self.name


REGISTRY: dict[str, Variant] = {}
"""Every variant by name, in the order the book introduces them."""


def register(variant: Variant) -> Variant:
    """Add a variant to :data:`REGISTRY` (its name must be new and must not contain a label's settings).

    Book: chapter 1, "SAM and its family".

    Raises:
        ValueError: if the name is taken or is not lower-case and hyphenated.
    """
    if variant.name in REGISTRY:
        raise ValueError(f"variant {variant.name!r} is registered already")
    if variant.name != variant.name.lower() or " " in variant.name or not variant.name:
        raise ValueError(f"variant name {variant.name!r} must be lower case, words joined by hyphens")
    REGISTRY[variant.name] = variant
    return variant


_M_EXAMPLES: dict[str, dict[str, Any]] = {
    "m4-loop": {"m": 4, "backend": "loop"},
    "m4-vmap": {"m": 4, "backend": "vmap"},
}
_RW_EXAMPLES: dict[str, dict[str, Any]] = {
    "": {"lam": 2.0, "seed": 3},
    "exact": {"lam": 2.0, "score": "exact", "seed": 3},
}

for _v in (
    Variant("sgd", "SGD", SAM, fixed={"rho": 0.0}, color="#4d4d4d"),
    Variant("sam", "SAM", SAM, color="#1f77b4"),
    Variant("usam", "USAM", SAM, fixed={"normalize": False}, color="#6baed6"),
    Variant("asam", "ASAM", SAM, fixed={"adaptive": True}, color="#17becf", benchmark=False),
    Variant("n-sam", "n-SAM", NSAM, settings=("data",), color="#9467bd"),
    Variant("n-usam", "n-USAM", NSAM, fixed={"normalize": False}, settings=("data",), color="#c5b0d5",
            benchmark=False),
    Variant("m-sam", "m-SAM", MSAM, settings=("m",), examples=_M_EXAMPLES, color="#d62728"),
    Variant("m-usam", "m-USAM", MSAM, fixed={"normalize": False}, settings=("m",), examples=_M_EXAMPLES,
            color="#ff9896", benchmark=False),
    Variant("rw-sam", "RW-SAM", RWSAM, settings=("lam", "delta"), examples=_RW_EXAMPLES, color="#2ca02c"),
    Variant("rw-usam", "RW-USAM", RWSAM, fixed={"normalize": False}, settings=("lam", "delta"),
            examples=_RW_EXAMPLES, color="#98df8a", benchmark=False),
):
    register(_v)


VARIANTS: dict[str, str] = {name: v.display for name, v in REGISTRY.items()}
"""For each variant name, the name the book prints (a view of :data:`REGISTRY`, kept for readers)."""


def variant_of(name_or_label: str) -> str:
    """The variant a label starts with (the longest matching name).

    Book: chapter 1, "SAM and its family".

    Raises:
        ValueError: if the label starts with no variant name of :data:`REGISTRY`.
    """
    key = name_or_label.lower()
    for name in sorted(REGISTRY, key=len, reverse=True):
        if key == name or key.startswith(name + "-"):
            return name
    raise ValueError(
        f"label {name_or_label!r} does not start with a variant name; valid names: {', '.join(REGISTRY)}"
    )


def display_name(name_or_label: str) -> str:
    """The printed name of the variant a label starts with, e.g. ``"n-usam"`` -> ``"n-USAM"``.

    Book: chapter 1, "SAM and its family".
    """
    return REGISTRY[variant_of(name_or_label)].display


def make(name: str, model: nn.Module, base: Optimizer, **kwargs: Any) -> PerturbedOptimizer:
    """Build variant ``name`` (a name of :data:`REGISTRY`) over ``base``; ``kwargs`` go to its class.

    Book: chapter 1, "SAM and its family".

    Raises:
        ValueError: for a name that is not registered.
    """
    if name not in REGISTRY:
        raise ValueError(f"variant must be one of {', '.join(REGISTRY)}; got {name!r}")
    return REGISTRY[name].make(model, base, **kwargs)


def label(name: str, **settings: Any) -> str:
    """A run label: the variant's name, then each setting in the order given, a number as its name and
    value (``m=16`` -> ``m16``, ``lam=0.1`` -> ``lam0.1``), a string as itself (``backend="vmap"``
    -> ``vmap``).

    Book: chapter 1, "SAM and its family".

    Raises:
        ValueError: for a name that is not registered.
    """
    if name not in REGISTRY:
        raise ValueError(f"variant must be one of {', '.join(REGISTRY)}; got {name!r}")
    parts = [name]
    for key, value in settings.items():
        parts.append(str(value) if isinstance(value, str) else f"{key}{value:g}")
    return "-".join(parts)
