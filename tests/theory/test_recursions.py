"""Tests for sam_tutorial.theory.recursions: each variant's update direction against its formula written out
with
closed-form quadratic gradients, the m = b and rho = 0 reductions, and exact expectations."""

from __future__ import annotations

import itertools

import pytest
import torch

from sam_tutorial.sgn.monte_carlo import sample_batches
from sam_tutorial.theory import recursions
from sam_tutorial.theory.problems import make_quadratic_problem

P = make_quadratic_problem(n=6, dim=3, seed=4)
X = torch.tensor([0.4, -1.2, 0.7], dtype=torch.float64)
BATCH = torch.tensor([4, 0, 5, 2])


def _g(x: torch.Tensor, idx: list[int]) -> torch.Tensor:
    return P.grads(x)[idx].mean(0)


def _by_hand(variant: str, x: torch.Tensor, batch: list[int], rho: float, m: int | None) -> torch.Tensor:
    def unit(v: torch.Tensor) -> torch.Tensor:
        return v / v.norm()

    full = list(range(6))
    if variant == "sgd":
        return _g(x, batch)
    if variant in ("usam", "sam"):
        e = _g(x, batch)
        return _g(x + rho * (unit(e) if variant == "sam" else e), batch)
    if variant in ("n-usam", "n-sam"):
        e = _g(x, full)
        return _g(x + rho * (unit(e) if variant == "n-sam" else e), batch)
    blocks = [batch[i : i + m] for i in range(0, len(batch), m)]
    dirs = []
    for blk in blocks:
        e = _g(x, blk)
        dirs.append(_g(x + rho * (unit(e) if variant == "m-sam" else e), blk))
    return torch.stack(dirs).mean(0)


@pytest.mark.parametrize("variant", recursions.VARIANTS)
def test_update_direction_matches_the_formula(variant: str) -> None:
    m = 2 if variant.startswith("m-") else None
    got = recursions.update_direction(P, X, variant, BATCH, rho=0.3, m=m)
    torch.testing.assert_close(got, _by_hand(variant, X, BATCH.tolist(), 0.3, m), rtol=1e-12, atol=0)


def test_reductions_m_equals_b_and_rho_zero() -> None:
    for normalize in ("usam", "sam"):
        whole = recursions.update_direction(P, X, normalize, BATCH, rho=0.3)
        micro = recursions.update_direction(P, X, "m-" + normalize, BATCH, rho=0.3, m=4)
        torch.testing.assert_close(micro, whole, rtol=1e-14, atol=0)
        e_whole = recursions.expected_update(P, X, normalize, rho=0.3, b=4)
        e_micro = recursions.expected_update(P, X, "m-" + normalize, rho=0.3, b=4, m=4)
        torch.testing.assert_close(e_micro, e_whole, rtol=1e-14, atol=0)
    sgd = recursions.update_direction(P, X, "sgd", BATCH, rho=0.3)
    for variant in recursions.VARIANTS:
        m = 2 if variant.startswith("m-") else None
        torch.testing.assert_close(recursions.update_direction(P, X, variant, BATCH, rho=0.0, m=m), sgd)


@pytest.mark.parametrize("variant", ["sam", "n-sam", "m-usam"])
def test_expected_update_equals_enumeration_over_ordered_batches(variant: str) -> None:
    # every ordered batch of 4 distinct samples, consecutive micro-batches of 2: the law the
    # discrete runs sample from
    m = 2 if variant.startswith("m-") else None
    perms = list(itertools.permutations(range(6), 4))
    expected = torch.stack([_by_hand(variant, X, list(s), 0.3, m) for s in perms]).mean(0)
    got = recursions.expected_update(P, X, variant, rho=0.3, b=4, m=m)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    mc = recursions.expected_update(
        P, X, variant, rho=0.3, b=4, m=m, max_batches=4, generator=torch.Generator().manual_seed(0)
    )
    assert mc.shape == (3,) and torch.isfinite(mc).all()
    # the Monte Carlo case is the mean of the hand-written direction over the batches it draws (batches of
    # the perturbation's size, by sample_batches from the generator); n-sam's expectation stays exact
    draws = sample_batches(6, m or 4, 4, replacement=False, generator=torch.Generator().manual_seed(0))
    by_hand = torch.stack([_by_hand(variant, X, s.tolist(), 0.3, m) for s in draws]).mean(0)
    torch.testing.assert_close(mc, got if variant == "n-sam" else by_hand, rtol=1e-12, atol=1e-15)


def test_parse_variant_and_sizes() -> None:
    assert recursions.parse_variant("n-usam") == recursions.Variant("n-usam", "full", False)
    assert recursions.parse_variant("sam") == recursions.Variant("sam", "batch", True)
    assert recursions.check_sizes(6, recursions.parse_variant("sam"), 8, 8, replacement=True) == 8
    with pytest.raises(ValueError, match="variant"):
        recursions.parse_variant("SAM")
    with pytest.raises(ValueError, match="m must be"):
        recursions.update_direction(P, X, "m-sam", BATCH, rho=0.1, m=3)
    with pytest.raises(ValueError, match="x0"):
        recursions.discrete_trajectory(
            P, torch.zeros(2, 3, dtype=torch.float64), "sgd", eta=0.1, rho=0.0, b=2, n_steps=1, n_paths=3
        )
