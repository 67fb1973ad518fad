"""The registry of what the book tests: the paper's claims C1–C11 and its table cells (T1, T2, T4, T6), the
toy checks that recompute them, one status vocabulary, the rule that turns a claim's rows into its
status, and the claims index ``book/claims.md`` rendered from all of it (``python tools/claims_page.py``).

>>> claim_status(["reproduced", "consistent"]), claim_status(["reproduced", "contradicted"])
('reproduced', 'partly')
>>> claim_status(["contradicted", "underpowered"]), claim_status(["not at this scale"])
('contradicted', 'not at this scale')
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CLAIMS",
    "FAILING",
    "STATUSES",
    "STATUS_MEANING",
    "TABLE_CELLS",
    "TOY_CHECKS",
    "Claim",
    "Row",
    "ToyCheck",
    "claim_status",
    "claims_page",
    "failures",
    "statuses_by_claim",
]

STATUSES = (
    "reproduced",
    "partly",
    "consistent",
    "contradicted",
    "underpowered",
    "not at this scale",
    "not attempted",
)
"""The one status vocabulary of rows and claims (``partly`` only for claims, from their rows)."""

STATUS_MEANING = {
    "reproduced": "the book's numbers show what the paper states, by the stated test",
    "partly": "some rows of the claim are reproduced or consistent, others are contradicted, "
    "underpowered or beyond this scale",
    "consistent": "an equality the paper states, where a powered test found no difference",
    "contradicted": "the book's numbers go the other way, or a test powered to see the effect found none",
    "underpowered": "the book's runs cannot tell the effect from noise (too few seeds, or a quantity below "
    "its Monte Carlo error)",
    "not at this scale": "the claim needs models, data or hardware beyond the CPU book, and no recorded "
    "result exists",
    "not attempted": "nothing was run for it (no catalogue entry or no result file)",
}
"""What each status means, as the claims index states it."""

FAILING = ("partly", "contradicted")
"""Statuses that chapter 6's summary must list (:func:`failures`)."""

_POSITIVE = {"reproduced", "consistent"}
_NO_EVIDENCE = ("underpowered", "not at this scale", "not attempted")


@dataclass(frozen=True)
class Row:
    """One line of the scoreboard: the claim it belongs to (a key of ``CLAIMS`` or
    ``TABLE_CELLS``), what it tests, where, at what scale, the measured value, status and source."""

    claim: str
    statement: str
    where: str
    scale: str
    measured: str
    status: str
    source: str


@dataclass(frozen=True)
class Claim:
    """A claim of the paper: its statement (Markdown with the book's macros), the chapters that test it,
    and where each test is made (prose for the claims index)."""

    key: str
    statement: str
    chapters: str
    checked: str


@dataclass(frozen=True)
class ToyCheck:
    """A toy-scale row: the claim, what the row tests, the chapter that checks it at full size, and the
    function of :mod:`~sam_tutorial.reproduction.toy_checks` with its arguments (one size in every mode)."""

    claim: str
    statement: str
    where: str
    function: str
    kwargs: dict[str, Any] = field(default_factory=dict)


CLAIMS: dict[str, Claim] = {
    c.key: c
    for c in (
        Claim(
            "C1",
            r"$\E\Vert\nabla f_\gamma\Vert^2=\Vert\nabla f\Vert^2+c_B\Tr V$",
            "2 (also 1, 3)",
            "Chapter 2: Monte Carlo with autograd batch gradients at two points, both sampling schemes, "
            "every batch size (z-scores), and the whole covariance matrix $c_BV$. Chapter 1: exact "
            "enumeration on the 2-D landscape. Chapter 3: $c_m$ measured from drift differences.",
        ),
        Claim(
            "C2",
            r"Proposition 3.9: $\E\Vert\nabla f_\gamma\Vert$ does not increase with $B$ (strictly "
            "decreasing under a log-concavity hypothesis, UNCONFIRMED and untested)",
            "2 (also 3)",
            "Chapter 2: a leave-one-out proof, and Monte Carlo with each decrement measured in standard "
            "errors, inside the Jensen bounds. Chapter 3: exact enumeration at the two minima of the "
            "landscape.",
        ),
        Claim(
            "C3",
            r"USAM-family drifts (Theorems 3.3–3.5), with a $\frac\rho2c_m\Tr V$ term, none for n-USAM",
            "3",
            "Section 3.5: exact mean updates (every batch enumerated) against autograd drifts on "
            "logistic regression, log-log slope 2 in $\\rho$; three wrong models with slope 1; the "
            "coefficient $c_m$ recovered. One point of one problem.",
        ),
        Claim(
            "C4",
            r"SAM-family drifts (Theorems 3.6–3.8): $-\nabla(f+\rho\,\E\Vert\nabla f_I\Vert)+O(\rho^2)$",
            "3",
            "Section 3.5, as C3, at a non-stationary point. Not tested where batch gradients are small, "
            "where the normalised drift is not smooth.",
        ),
        Claim(
            "C5",
            r"The extended SDE is a weak approximation, error $O(\eta+\rho^2)$",
            "3",
            "Section 3.6: m-USAM ($m=1$) against Euler–Maruyama paths of its SDE, the noiseless ODE of "
            "the drift as a control. The scoreboard's order test starts where the drift vanishes, so that "
            "the noise is the only $O(\\eta)$ effect the SDE must capture. No normalised variant is "
            "tested.",
        ),
        Claim(
            "C6",
            r"Smaller $m$, stronger penalty on $\Tr V$: high-$\Tr V$ minima are left faster; n-SAM "
            r"behaves like SGD in $\Tr V$",
            "4",
            "Section 4.3: a valley of minima of equal loss and Hessian where only the noise changes; the "
            "USAM family drifts at the rate $\\rho c_m$, SGD and n-SAM do not drift; normalised m-SAM at "
            "equal $\\rho/\\sqrt m$. Section 4.5: an $m$-sweep on MNIST-1D with noisy labels. Section "
            "4.6: escape from an SGD solution.",
        ),
        Claim(
            "C7",
            "m-sharpness in the diagonal linear network of Andriushchenko and Flammarion",
            "4",
            "Section 4.4: the test loss falls as $m$ shrinks with the radius tuned per $m$; random "
            "perturbations of the same size do not do it.",
        ),
        Claim(
            "C8",
            "The Gibbs weights solve the entropy-regularised maximisation",
            "5",
            "Section 5.1: the weights against a direct maximisation. Chapter 1 shows the Gibbs weights "
            "and their effective sample size on one batch.",
        ),
        Claim(
            "C9",
            "The finite-difference estimator of per-sample gradient norms; Rademacher against Gaussian "
            "probes",
            "5",
            "Section 5.3: the probe's $\\sqrt{2/\\pi}$ factor and variances, its step size, dropout, the "
            "effective batch.",
        ),
        Claim(
            "C10",
            r"Cost: SGD 1F+1B, SAM 2F+2B, m-SAM 2F+2B in $2B/m$ pieces, RW-SAM 3F+2B ($\approx7/6$ of "
            r"SAM); m-SAM ($m=64$) $\approx2\times$ SAM",
            "1, 5, 6, appendix",
            "Chapter 1: exact pass counts by hooks, buffers held, timings on a small MLP. Section 5.4: "
            "RW-SAM's extra forward pass. Section 6.2 and the performance appendix: the recorded CPU and "
            "CUDA benchmarks.",
        ),
        Claim(
            "C11",
            r"Table 6: $\Tr V$ at the solution orders SGD > SAM > RW-SAM, with accuracy",
            "5, 6",
            "Section 5.5: the Table 6 ordering at equal $\\rho$ on MNIST-1D for both readings of RW-SAM's "
            "descent pass; section 6.2 applies the scoreboard's rule. The CIFAR table waits for GPU runs "
            "(section 6.3).",
        ),
    )
}
"""The paper's claims as the book reconstructs them (the paper's full text was not available)."""

TABLE_CELLS: dict[str, str] = {
    "T1": "Table 1: CIFAR-10/100 test accuracy, SGD < SAM < RW-SAM",
    "T2": "Table 2: ImageNet and ViT fine-tuning, baseline < SAM < RW-SAM",
    "T4": "Table 4: label noise 20–80 %, RW-SAM above SAM and SGD",
    "T6": "Table 6: tr V at the solution, SGD > SAM > RW-SAM (CIFAR-10)",
}
"""The paper's tables, each cell a row of the scoreboard (with its MNIST-1D analogues where they exist)."""

TOY_CHECKS: tuple[ToyCheck, ...] = (
    ToyCheck("C1", "E‖∇f_γ‖² = ‖∇f‖² + c_B tr V", "ch. 2", "c1_second_moment", {"num_batches": 1000}),
    ToyCheck("C2", "E‖∇f_γ‖ falls as |γ| grows", "ch. 2", "c2_monotone_norm", {"num_batches": 1000}),
    ToyCheck("C3", "USAM-family drift, O(ρ²) remainder", "ch. 3 §5", "c34_drift_order", {"family": "usam"}),
    ToyCheck("C4", "SAM-family drift, O(ρ²) remainder", "ch. 3 §5", "c34_drift_order", {"family": "sam"}),
    ToyCheck(
        "C5",
        "weak error O(η): the SDE captures the noise (noiseless ODE as control)",
        "ch. 3 §6",
        "c5_weak_order",
    ),
    ToyCheck("C5", "weak error O(ρ²): the ρ half", "ch. 3 §6", "c5_rho_half"),
    ToyCheck(
        "C6",
        "valley, USAM family: smaller m drifts further; n-USAM does not drift",
        "ch. 4 §3",
        "c6_usam_valley",
    ),
    ToyCheck(
        "C6",
        "valley, normalised m-SAM: the drift grows as m shrinks, equal at equal ρ/√m",
        "ch. 4 §3",
        "c6_normalised_valley",
    ),
    ToyCheck("C7", "A&F diagonal net: 1-SAM test loss ≪ n-SAM ≈ GD", "ch. 4 §4", "c7_diagonal_net"),
    ToyCheck(
        "C8", "Gibbs weights solve the entropy-regularised maximisation", "ch. 5 §1", "c8_gibbs_weights"
    ),
    ToyCheck(
        "C9",
        "(zᵀg)² unbiased for ‖g‖²; Rademacher variance below Gaussian (exact projections)",
        "ch. 5 §3",
        "c9_square_probe",
    ),
    ToyCheck(
        "C9",
        "finite-difference score |Δℓ_i|/δ: mean √(2/π)‖∇f_i‖ (what RW-SAM uses)",
        "ch. 5 §3",
        "c9_abs_probe",
    ),
)
"""The toy-scale rows of the scoreboard, in order."""


def claim_status(statuses: Iterable[str]) -> str:
    """A claim's status from its rows' (the rule at the end of :data:`~.scoreboard.RULE`): reproduced if
    every row is reproduced or consistent (consistent if none is reproduced), contradicted if a row is
    contradicted and none reproduced or consistent, partly if some rows are reproduced or consistent and
    others are not, else the first of underpowered, not at this scale, not attempted present."""
    s = list(statuses)
    unknown = set(s) - set(STATUSES)
    if unknown or not s:
        raise ValueError(f"need row statuses from {STATUSES}; got {s}")
    positive = [x for x in s if x in _POSITIVE]
    if positive and len(positive) == len(s):
        return "reproduced" if "reproduced" in positive else "consistent"
    if positive or "partly" in s:
        return "partly"
    if "contradicted" in s:
        return "contradicted"
    return next(x for x in _NO_EVIDENCE if x in s)


def statuses_by_claim(rows: Iterable[Row]) -> dict[str, str]:
    """:func:`claim_status` of every claim and table that has rows, in registry order."""
    grouped: dict[str, list[str]] = {}
    for row in rows:
        grouped.setdefault(row.claim, []).append(row.status)
    order = [*CLAIMS, *TABLE_CELLS]
    unknown = set(grouped) - set(order)
    if unknown:
        raise ValueError(f"rows name claims outside the registry: {sorted(unknown)}")
    return {key: claim_status(grouped[key]) for key in order if key in grouped}


def failures(rows: Iterable[Row]) -> list[Row]:
    """Every row whose status is contradicted, and every row of a claim whose status is partly or
    contradicted that is not reproduced or consistent: what chapter 6's summary lists."""
    rows = list(rows)
    by_claim = statuses_by_claim(rows)
    order = {key: i for i, key in enumerate([*CLAIMS, *TABLE_CELLS])}
    failing = [
        r
        for r in rows
        if r.status == "contradicted" or (by_claim[r.claim] in FAILING and r.status not in _POSITIVE)
    ]
    return sorted(failing, key=lambda r: order[r.claim])  # stable: the scoreboard's order within a claim


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_page(rows: Sequence[Row]) -> str:
    """The claims index ``book/claims.md``, rendered from the registry and the scoreboard's rows."""
    by_claim = statuses_by_claim(rows)
    lines = [
        "# Claims index",
        "",
        "Every claim of {cite:t}`luo2025unveiling` that this book tests, the chapter that tests it, and its",
        "status at this book's scale. This page is generated (`python tools/claims_page.py`) from the",
        "registry `sam_tutorial.reproduction.claims` and the rows of [chapter 6](06_reproduction.ipynb)'s",
        "scoreboard, which applies one rule to every row; a test holds the page equal to them. The paper's",
        "full text was not available, so the statements are reconstructions, and the chapters mark what is",
        "UNCONFIRMED.",
        "",
        "**Statuses.**",
        "",
    ]
    lines += [f"- **{s}**: {STATUS_MEANING[s]}." for s in STATUSES]
    lines += ["", "| claim | statement | chapter | status | rows |", "|---|---|---|---|---|"]
    for key, claim in CLAIMS.items():
        own = [r for r in rows if r.claim == key]
        count = ", ".join(f"{n} {s}" for s in STATUSES if (n := sum(r.status == s for r in own)))
        status = by_claim.get(key, "not attempted")
        lines.append(f"| {key} | {_cell(claim.statement)} | {claim.chapters} | {status} | {count or '—'} |")
    lines += ["", "## The paper's tables", "", "| table | statement | status | rows |", "|---|---|---|---|"]
    for key, text in TABLE_CELLS.items():
        own = [r for r in rows if r.claim == key]
        count = ", ".join(f"{n} {s}" for s in STATUSES if (n := sum(r.status == s for r in own)))
        lines.append(f"| {key} | {_cell(text)} | {by_claim.get(key, 'not attempted')} | {count or '—'} |")
    lines += [
        "",
        "## What fails or is only partly shown",
        "",
        "Every contradicted row, and every row of a partly reproduced or contradicted claim that is not",
        "reproduced (chapter 6's summary prints the same list):",
        "",
        "| claim | status | row | scale | where |",
        "|---|---|---|---|---|",
    ]
    for r in failures(rows):
        lines.append(f"| {r.claim} | {r.status} | {_cell(r.statement)} | {r.scale} | {r.where} |")
    lines += ["", "## Where each claim is checked", ""]
    for key, claim in CLAIMS.items():
        lines += [key, f": {claim.checked}", ""]
    lines += [
        "Two links of the argument are not claims of the table but carry it; the [map of the argument]",
        "(intro.md) shows where they stand: $\\Tr V\\approx\\Tr F\\approx\\Tr H$ near a minimum (chapter 2:",
        "holds when the labels look like draws from the model, fails at an interpolating minimum), and",
        "flatness implies generalisation (the paper's §3.5 cites an information-theoretic bound",
        "{cite:p}`neu2021information`; this book does not test it, and it is contested).",
        "",
    ]
    return "\n".join(lines)
