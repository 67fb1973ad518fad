"""One spelling of each variant: every vocabulary of the package is a subset of optim.variants.VARIANTS."""

from __future__ import annotations

import pytest

from sam_tutorial.engine.experiments import EXPERIMENTS
from sam_tutorial.engine.train_config import OPTIMIZERS
from sam_tutorial.optim.variants import VARIANTS, display_name, variant_of
from sam_tutorial.theory.recursions import VARIANTS as TOY_VARIANTS


def test_training_and_toy_vocabularies_use_the_one_spelling() -> None:
    assert set(OPTIMIZERS) <= set(VARIANTS)
    assert set(TOY_VARIANTS) <= set(VARIANTS)


def test_every_catalogue_label_starts_with_its_variant() -> None:
    for exp in EXPERIMENTS.values():
        for spec in exp.runs("quick"):
            assert variant_of(spec.label) == variant_of(spec.train.optimizer), (exp.name, spec.label)


def test_labels_read_back_and_bad_labels_are_refused() -> None:
    assert variant_of("rw-usam-noise20") == "rw-usam" and display_name("n-sam") == "n-SAM"
    assert variant_of("usam") == "usam" and variant_of("sam-noise40") == "sam"
    with pytest.raises(ValueError, match="does not start with a variant name"):
        variant_of("msam-m16")
