"""The registry of named experiments, ``EXPERIMENTS``, filled by the catalogue modules through
:func:`register` when :mod:`sam_tutorial.engine.catalog` is imported.

It imports nothing of the catalogue, so the catalogue modules, :mod:`sam_tutorial.engine.experiments` and
:mod:`sam_tutorial.engine.recorded` all import it without an import cycle.
"""

from __future__ import annotations

from sam_tutorial.engine.runs import Experiment

__all__ = ["EXPERIMENTS", "get_experiment", "list_experiments", "register"]


EXPERIMENTS: dict[str, Experiment] = {}
"""Every named experiment, by name, in the order :func:`list_experiments` shows them."""


def register(exp: Experiment) -> Experiment:
    """Add an experiment to ``EXPERIMENTS`` (names are unique).

    Raises:
        ValueError: for a name already taken.
    """
    if exp.name in EXPERIMENTS:
        raise ValueError(f"an experiment named {exp.name!r} is already registered")
    EXPERIMENTS[exp.name] = exp
    return exp


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid names: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def list_experiments() -> list[tuple[str, str]]:
    """``(name, description)`` of every experiment."""
    return [(e.name, e.description) for e in EXPERIMENTS.values()]
