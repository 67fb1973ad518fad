"""One spelling for every member of the SAM family, used by the training configuration, the toy
recursions, the benchmark keys, experiment labels and the figures.

A *label* is a variant name followed by its settings, joined with hyphens: ``"m-sam-m16"``,
``"m-sam-m16-vmap"``, ``"rw-sam-noise40"``. :func:`variant_of` reads the variant back from a label and
:func:`display_name` gives the name the book prints.

>>> variant_of("m-sam-m16-loop"), display_name("m-sam-m16-loop")
('m-sam', 'm-SAM')
>>> variant_of("sam-noise20"), display_name("rw-usam")
('sam', 'RW-USAM')
"""

from __future__ import annotations

__all__ = ["VARIANTS", "display_name", "variant_of"]

VARIANTS: dict[str, str] = {
    "sgd": "SGD",
    "sam": "SAM",
    "usam": "USAM",
    "asam": "ASAM",
    "n-sam": "n-SAM",
    "n-usam": "n-USAM",
    "m-sam": "m-SAM",
    "m-usam": "m-USAM",
    "rw-sam": "RW-SAM",
    "rw-usam": "RW-USAM",
}
"""For each variant name, the name the book prints (a U marks the unnormalised perturbation)."""


def variant_of(label: str) -> str:
    """The variant a label starts with (the longest matching name).

    Raises:
        ValueError: if the label starts with no variant name of :data:`VARIANTS`.
    """
    key = label.lower()
    for name in sorted(VARIANTS, key=len, reverse=True):
        if key == name or key.startswith(name + "-"):
            return name
    raise ValueError(
        f"label {label!r} does not start with a variant name; valid names: {', '.join(VARIANTS)}"
    )


def display_name(label: str) -> str:
    """The printed name of the variant a label starts with, e.g. ``"n-usam"`` -> ``"n-USAM"``."""
    return VARIANTS[variant_of(label)]
