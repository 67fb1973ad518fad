r"""Small versions of the checks of chapters 1–5 (claims C1–C9), recomputed through the package for
chapter 6's scoreboard in a few seconds. The chapters recompute their own, larger versions inside the
notebooks (nothing is cached); these use the same package functions at a smaller size, so the scoreboard
shows a measured value for every claim without rerunning the chapters.

Each function returns a :class:`Check`: the measured quantities, whether the claim's stated test passes,
and the test in words. Every run is seeded: the same machine gives the same numbers. An identity checked
by Monte Carlo passes within 3 standard errors (at 2, a true identity fails one check in twenty); an
effect (a decrease, a difference) must exceed 2 standard errors.

>>> check = c8_gibbs_weights()
>>> check.passed, check.values["gap"] < 1e-6
(True, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "Check",
    "c1_second_moment",
    "c2_monotone_norm",
    "c34_drift_order",
    "c5_weak_error",
    "c6_valley_escape",
    "c7_diagonal_net",
    "c8_gibbs_weights",
    "c9_probe_variance",
    "loglog_slope",
]


@dataclass(frozen=True)
class Check:
    """The outcome of one check: measured values, the verdict of its test, and the test in words."""

    measured: str
    passed: bool
    test: str
    values: dict[str, Any] = field(default_factory=dict)


def loglog_slope(x: Any, y: Any) -> float:
    """Least-squares slope of log y against log x (the fitted order of a power law)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def _toy_net(n: int = 48, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return net, x, y


def _ce(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(out, y, reduction="none")


def c1_second_moment(num_batches: int = 4000, b: int = 8) -> Check:
    r"""C1: Monte Carlo :math:`\mathbb E\|g_\gamma\|^2` (autograd batch gradients) against
    :math:`\|\nabla f\|^2+c_B\operatorname{tr}V` (per-sample gradients), both sampling schemes."""
    from sam_tutorial.sgn import monte_carlo
    from sam_tutorial.sgn.batches import expected_sq_batch_grad_norm
    from sam_tutorial.sgn.per_sample import per_sample_grads

    net, x, y = _toy_net()
    grads = per_sample_grads(net, _ce, x, y)
    z = {}
    for replacement in (False, True):
        batches = monte_carlo.sample_batches(
            len(y), b, num_batches, replacement=replacement, generator=torch.Generator().manual_seed(1)
        )
        mc = monte_carlo.monte_carlo_moments(monte_carlo.batch_grads(net, _ce, x, y, batches), grads.mean(0))
        closed = expected_sq_batch_grad_norm(grads, b, replacement=replacement)
        z["with" if replacement else "without"] = float((mc.sq_norm - closed) / mc.sq_norm_se)
    worst = max(abs(v) for v in z.values())
    return Check(
        f"z = {z['without']:+.2f} (without repl.), {z['with']:+.2f} (with); {num_batches} batches",
        worst <= 3,
        "|Monte Carlo − closed form| ≤ 3 standard errors for both schemes",
        z,
    )


def c2_monotone_norm(sizes: tuple[int, ...] = (2, 4, 8, 16), num_batches: int = 3000) -> Check:
    r"""C2: :math:`\mathbb E\|g_\gamma\|` falls as the batch grows; each decrement in standard errors."""
    from sam_tutorial.sgn import monte_carlo
    from sam_tutorial.sgn.per_sample import per_sample_grads

    net, x, y = _toy_net()
    full = per_sample_grads(net, _ce, x, y).mean(0)
    means, ses = [], []
    for b in sizes:
        batches = monte_carlo.sample_batches(
            len(y), b, num_batches, generator=torch.Generator().manual_seed(b)
        )
        mc = monte_carlo.monte_carlo_moments(monte_carlo.batch_grads(net, _ce, x, y, batches), full)
        means.append(float(mc.norm))
        ses.append(float(mc.norm_se))
    z = [(means[i] - means[i + 1]) / math.hypot(ses[i], ses[i + 1]) for i in range(len(sizes) - 1)]
    return Check(
        f"E‖g‖ = {' > '.join(f'{m:.3f}' for m in means)} for B = {', '.join(map(str, sizes))}; "
        f"smallest decrement {min(z):.1f} s.e.",
        min(z) > 2,
        "every decrement of E‖g_γ‖ exceeds 2 standard errors",
        {"means": means, "z": z},
    )


def c34_drift_order(family: str, rhos: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08)) -> Check:
    r"""C3 (``family="usam"``) or C4 (``"sam"``): the exact mean update (enumeration of all batches) minus
    the stated drift is :math:`O(\rho^2)`, for the mini-batch variant and its ``m = 1`` form (logistic
    regression, n = 12, B = 4)."""
    from sam_tutorial.theory import sde
    from sam_tutorial.theory.problems import LogisticProblem, logistic_data
    from sam_tutorial.theory.recursions import expected_update

    problem = LogisticProblem(*logistic_data(12, 3, seed=1))
    x = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    slopes = {}
    for variant, m in ((family, None), (f"m-{family}", 1)):
        gaps = [
            float(
                (
                    expected_update(problem, x, variant, rho=r, b=4, m=m)
                    + sde.drift(problem, x, variant, rho=r, b=4, m=m)
                ).norm()
            )
            for r in rhos
        ]
        slopes[variant if m is None else f"{variant} (m=1)"] = loglog_slope(rhos, gaps)
    worst = max(abs(s - 2) for s in slopes.values())
    return Check(
        "log-log slope " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()),
        worst < 0.3,
        "slope of the drift gap against ρ within 0.3 of 2",
        slopes,
    )


def c5_weak_error(etas: tuple[float, float] = (0.2, 0.05), n_paths: int = 4000) -> Check:
    r"""C5: the weak error of m-USAM (m = 1) against Euler–Maruyama on the extended SDE shrinks with
    :math:`\eta` (per-sample quadratics, n = 8, B = 4, ρ = 0.05, T = 1)."""
    from sam_tutorial.theory import sde
    from sam_tutorial.theory.problems import make_quadratic_problem

    quad = make_quadratic_problem(n=8, dim=2, seed=0, curvature_range=(0.5, 3.0))
    x0 = quad.minimizer() + torch.tensor([1.0, -1.0], dtype=torch.float64)
    errs, ses = [], []
    for eta in etas:
        r = sde.weak_error(quad, x0, "m-usam", eta=eta, rho=0.05, b=4, m=1, horizon=1.0, n_paths=n_paths)
        k = int((r.discrete - r.sde).abs().argmax())
        errs.append(float(r.error))
        ses.append(float(r.stderr[k]))
    z = (errs[0] - errs[-1]) / math.hypot(ses[0], ses[-1])
    return Check(
        f"weak error {errs[0]:.4f} (η = {etas[0]}) → {errs[-1]:.4f} (η = {etas[-1]}), drop {z:.1f} s.e.",
        z > 2,
        "the weak error falls with η by more than 2 standard errors",
        {"errors": errs, "stderr": ses, "z": z},
    )


def c6_valley_escape(n_paths: int = 200, horizon: float = 5.0) -> Check:
    r"""C6: along chapter 4's valley of minima (equal loss and sharpness, tr V falling with u), m-USAM
    with m = 1 moves towards low tr V further than USAM (m = B = 16); n-USAM does not move (like SGD)."""
    from sam_tutorial.theory.valley import ValleyProblem, simulate

    valley = ValleyProblem(kappa=1.0)
    x0 = torch.tensor([0.8, 0.0], dtype=torch.float64)
    steps = int(round(horizon / 0.05))
    out = {}
    for name, variant, m in (("m=1", "m-usam", 1), ("m=16", "usam", None), ("n-USAM", "n-usam", None)):
        u = simulate(
            valley,
            x0,
            variant,
            eta=0.05,
            rho=0.05,
            b=16,
            m=m,
            n_steps=steps,
            n_paths=n_paths,
            record_every=steps,
        )[-1, :, 0]
        out[name] = (float(0.8 - u.mean()), float(u.std() / math.sqrt(n_paths)))
    z = (out["m=1"][0] - out["m=16"][0]) / math.hypot(out["m=1"][1], out["m=16"][1])
    still = abs(out["n-USAM"][0]) / out["n-USAM"][1]
    return Check(
        f"displacement to lower tr V: m=1 {out['m=1'][0]:.3f}, m=16 {out['m=16'][0]:.3f} ({z:.1f} s.e. "
        f"apart); n-USAM {out['n-USAM'][0]:+.3f} ({still:.1f} s.e.)",
        z > 2 and still <= 2,
        "m=1 moves further than m=16 by > 2 s.e., and n-USAM's displacement is within 2 s.e. of 0",
        {"displacement": out, "z": z, "n_usam_se": still},
    )


def c7_diagonal_net(n_iters: int = 2000, rhos: tuple[float, ...] = (0.1, 0.2, 0.4)) -> Check:
    r"""C7: A&F's diagonal linear network (n = 20, d = 30, 3-sparse target): the best test loss over the
    radii of 1-SAM against n-SAM (m = n) and GD (deterministic full-batch runs, unnormalised)."""
    from sam_tutorial.theory.diagonal_msam import train_diagonal_msam
    from sam_tutorial.theory.diagonal_net import diagonal_net_data

    data = diagonal_net_data()
    n = data.features.shape[0]

    def best(m: int, radii: tuple[float, ...]) -> float:
        loss = train_diagonal_msam(data, m, radii, n_iters=n_iters).test_loss[:, -1]
        return float(torch.where(torch.isfinite(loss), loss, torch.full_like(loss, math.inf)).min())

    one, full, gd = best(1, rhos), best(n, rhos), best(1, (0.0,))
    return Check(
        f"test loss after {n_iters} it.: 1-SAM {one:.1e}, n-SAM {full:.1e}, GD {gd:.1e}",
        one < 0.5 * min(full, gd),
        "1-SAM's best test loss below half of n-SAM's and GD's",
        {"1-sam": one, "n-sam": full, "gd": gd},
    )


def c8_gibbs_weights(lam: float = 2.0, n: int = 16, trials: int = 2000) -> Check:
    r"""C8: :math:`\operatorname{softmax}(\lambda s)` maximises
    :math:`\langle p,s\rangle+\mathbb H(p)/\lambda`: it equals the closed-form maximum and an independent
    mirror-ascent maximiser, and beats random simplex points."""
    from sam_tutorial.sgn import reweighting as rw

    gen = torch.Generator().manual_seed(0)
    s = torch.rand(n, generator=gen, dtype=torch.float64) * 3
    p = rw.gibbs_weights(s, lam)
    best = float(rw.gibbs_objective(p, s, lam))
    gap = max(
        abs(best - float(rw.gibbs_value(s, lam))),
        abs(best - float(rw.gibbs_objective(rw.maximize_on_simplex(s, lam), s, lam))),
    )
    rand = torch.distributions.Dirichlet(torch.ones(n, dtype=torch.float64)).sample((trials,))
    worse = bool((rw.gibbs_objective(rand, s, lam) <= best).all())
    return Check(
        f"|objective − closed-form max| = {gap:.1e}; {trials} random simplex points all lower: {worse}",
        gap < 1e-6 and worse,
        "equal to the maximum within 1e-6 and above every random point",
        {"gap": gap, "random_lower": worse},
    )


def c9_probe_variance(dim: int = 10, n_probes: int = 20000) -> Check:
    r"""C9: with a Rademacher probe :math:`z`, :math:`(z^\top g)^2` is unbiased for :math:`\|g\|^2` and its
    variance :math:`2(\|g\|^4-\sum g_j^4)` is below the Gaussian probe's :math:`2\|g\|^4` (a vector of
    few, uneven entries, where the two differ most)."""
    from sam_tutorial.sgn import reweighting as rw

    gen = torch.Generator().manual_seed(0)
    g = torch.linspace(0.2, 2.0, dim, dtype=torch.float64)
    rad = (torch.randint(0, 2, (n_probes, dim), generator=gen).double() * 2 - 1) @ g
    gau = torch.randn(n_probes, dim, generator=gen, dtype=torch.float64) @ g
    sq = rad.square()
    z_mean = float((sq.mean() - g.square().sum()) / (sq.std() / math.sqrt(n_probes)))
    var_r, var_g = float(sq.var()), float(gau.square().var())
    pred_r, pred_g = float(rw.square_probe_variance(g)), float(rw.square_probe_variance(g, "gaussian"))
    rel = max(abs(var_r / pred_r - 1), abs(var_g / pred_g - 1))
    return Check(
        f"mean z = {z_mean:+.2f}; variance Rademacher/Gaussian {var_r / var_g:.3f} "
        f"(predicted {pred_r / pred_g:.3f}); variances within {rel:.0%} of the closed forms",
        abs(z_mean) <= 3 and var_r < var_g and rel < 0.1,
        "unbiased within 3 s.e., Rademacher variance below Gaussian, closed forms within 10 %",
        {"z_mean": z_mean, "ratio": var_r / var_g, "predicted_ratio": pred_r / pred_g, "rel": rel},
    )
