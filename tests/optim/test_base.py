"""Behaviour every optimizer of the family shares: skipping non-finite steps, BatchNorm, state_dict,
param_groups, bad input. Each test runs over SAM, NSAM, MSAM (both backends) and RWSAM."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM
from sam_tutorial.optim.base import PerturbedOptimizer
from tests.optim.helpers import CE, assert_params_equal, batch, mlp, sgd
from tests.optim.test_contract import cases, factories

X_ALL, Y_ALL = batch(seed=7, n=32)
CASES = cases()

FACTORIES = factories(data=(X_ALL, Y_ALL))  # every registered variant (tests/optim/test_contract.py)
NAMES = list(FACTORIES)


def snapshot(model: nn.Module, opt: PerturbedOptimizer) -> dict[str, object]:
    return {
        "params": [p.detach().clone() for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "state": copy.deepcopy(opt.base.state_dict()),
    }


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    for x, y in zip(a["params"], b["params"]):  # type: ignore[arg-type]
        assert torch.equal(x, y)
    for x, y in zip(a["buffers"], b["buffers"]):  # type: ignore[arg-type]
        assert torch.equal(x, y)
    sa, sb = a["state"]["state"], b["state"]["state"]  # type: ignore[index]
    assert sa.keys() == sb.keys()
    for k in sa:
        for key in sa[k]:
            assert torch.equal(torch.as_tensor(sa[k][key]), torch.as_tensor(sb[k][key]))


class NaNAt:
    """A loss that is NaN on the given call numbers (counting calls of loss_fn)."""

    def __init__(self, calls: set[int]) -> None:
        self.calls, self.count = calls, 0

    def __call__(self, out: Tensor, y: Tensor) -> Tensor:
        self.count += 1
        losses = CE(out, y)
        return losses * float("nan") if self.count in self.calls else losses


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "after-warm-up"])
@pytest.mark.parametrize("which", ["first-call", "last-call"])
def test_nonfinite_loss_skips_the_whole_step(name: str, warm: bool, which: str) -> None:
    model = mlp(bn=True)
    opt = FACTORIES[name](model, sgd(model))
    x, y = batch()
    if warm:  # the base optimizer's state exists: the skip is decided on the device
        opt.step(x, y, CE)
    before = snapshot(model, opt)
    counting = NaNAt(set())
    opt.step(x, y, counting)  # count the loss_fn calls of one step
    calls = counting.count
    restore_model(model, before)
    opt.base.load_state_dict(before["state"])  # type: ignore[arg-type]
    stats = opt.step(x, y, NaNAt({1 if which == "first-call" else calls}))
    assert bool(stats.skipped)
    assert_same(before, snapshot(model, opt))


def restore_model(model: nn.Module, snap: dict[str, object]) -> None:
    with torch.no_grad():
        for p, v in zip(model.parameters(), snap["params"]):  # type: ignore[arg-type]
            p.copy_(v)
        for b, v in zip(model.buffers(), snap["buffers"]):  # type: ignore[arg-type]
            b.copy_(v)


@pytest.mark.parametrize("name", NAMES)
def test_finite_steps_are_not_skipped(name: str) -> None:
    model = mlp()
    opt = FACTORIES[name](model, sgd(model))
    before = [p.detach().clone() for p in model.parameters()]
    stats = opt.step(*batch(), CE)
    assert not bool(stats.skipped)
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.isfinite(t).all() for t in stats if t is not None)


@pytest.mark.parametrize("name", [n for n in NAMES if not {"m", "data"} & set(CASES[n][0].settings)])
def test_batchnorm_statistics_come_from_the_first_pass_only(name: str) -> None:
    """After a step, running statistics equal those of one train-mode forward at w (exactly)."""
    model = mlp(bn=True)
    reference = copy.deepcopy(model)
    x, y = batch()
    FACTORIES[name](model, sgd(model)).step(x, y, CE)
    reference(x)
    for a, b in zip(model.buffers(), reference.buffers()):
        assert torch.equal(a, b)
    assert int(model[1].num_batches_tracked) == 1


def test_nsam_batchnorm_statistics_come_from_the_data_pass() -> None:
    model = mlp(bn=True)
    reference = copy.deepcopy(model)
    FACTORIES["n-sam"](model, sgd(model)).step(*batch(), CE)
    for start in range(0, 32, 8):  # one update per chunk of `data`
        reference(X_ALL[start : start + 8])
    for a, b in zip(model.buffers(), reference.buffers()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_resume_continues_identically(name: str) -> None:
    """Save after 2 steps, restore into fresh objects, take 2 more: same as 4 uninterrupted steps."""
    def make(seed_model: int = 0) -> tuple[nn.Module, PerturbedOptimizer]:
        model = mlp(seed_model, bn=True)
        base = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
        return model, FACTORIES[name](model, base)

    batches = [batch(seed=s) for s in range(4)]
    model, opt = make()
    for x, y in batches:
        opt.step(x, y, CE)

    first, opt1 = make()
    for x, y in batches[:2]:
        opt1.step(x, y, CE)
    checkpoint = copy.deepcopy({"model": first.state_dict(), "opt": opt1.state_dict()})
    assert checkpoint["opt"]["state"], "the base optimizer's moments are at the top level"
    assert set(checkpoint["opt"]) == {"state", "param_groups", "sam"}

    resumed, opt2 = make(seed_model=5)  # different initial weights, overwritten by the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    opt2.load_state_dict(checkpoint["opt"])
    assert opt2.param_groups is opt2.base.param_groups and opt2.state is opt2.base.state
    for x, y in batches[2:]:
        opt2.step(x, y, CE)
    assert_params_equal(model, resumed)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_load_state_dict_accepts_a_plain_base_checkpoint_and_rejects_others() -> None:
    model = mlp()
    plain = sgd(model)
    plain.zero_grad()
    CE(model(batch()[0]), batch()[1]).mean().backward()
    plain.step()
    opt = SAM(model, sgd(model, lr=0.4), rho=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.load_state_dict(plain.state_dict())
    scheduler.step()  # a scheduler attached before loading still reaches the base optimizer
    assert opt.base.param_groups[0]["lr"] == pytest.approx(0.05)
    buf = next(iter(opt.base.state.values()))["momentum_buffer"]
    assert torch.equal(buf, next(iter(plain.state.values()))["momentum_buffer"])
    with pytest.raises(ValueError, match="state_dict must come from"):
        opt.load_state_dict({"weights": 1})


def test_param_groups_are_the_base_optimizers_and_schedulers_reach_it() -> None:
    model = mlp()
    base = sgd(model, lr=0.4)
    opt = SAM(model, base, rho=0.1)
    assert opt.param_groups is base.param_groups and opt.state is base.state
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(*batch(), CE)
    scheduler.step()
    assert base.param_groups[0]["lr"] == pytest.approx(0.2)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    extra = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt.add_param_group({"params": [extra]})
    assert base.param_groups[-1]["params"][0] is extra


@pytest.mark.parametrize("name", NAMES)
def test_a_rejected_call_changes_nothing(name: str) -> None:
    model = mlp(bn=True)
    opt = FACTORIES[name](model, sgd(model))
    x, y = batch()
    opt.step(x, y, CE)
    before = snapshot(model, opt)
    grads = [p.grad.clone() for p in model.parameters()]
    bad_losses = [
        lambda out, t: CE(out, t).mean(),          # a scalar, not one loss per sample
        lambda out, t: CE(out, t)[:-1],            # one loss short
    ]
    for loss_fn in bad_losses:
        with pytest.raises(ValueError, match="one loss per sample"):
            opt.step(x, y, loss_fn)
    with pytest.raises(ValueError, match="targets has 15 samples but inputs has 16"):
        opt.step(x, y[:-1], CE)
    with pytest.raises(ValueError, match="empty batch"):
        opt.step(x[:0], y[:0], CE)
    assert_same(before, snapshot(model, opt))
    for p, g in zip(model.parameters(), grads):
        assert torch.equal(p.grad, g)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda m, b: SAM(m, b, rho=-0.1), "rho must be a finite number >= 0"),
        (lambda m, b: SAM(m, b, rho=float("nan")), "rho must be"),
        (lambda m, b: SAM(m, torch.optim.SGD, rho=0.1), "base must be a torch.optim.Optimizer"),
        (lambda m, b: SAM("model", b, rho=0.1), "model must be a torch.nn.Module"),
        (lambda m, b: MSAM(m, b, rho=0.1, m=0), "m must be an integer >= 1"),
        (lambda m, b: MSAM(m, b, rho=0.1, m=2, backend="cuda"), "backend must be one of auto, loop"),
        (lambda m, b: RWSAM(m, b, rho=0.1, lam=-1.0, delta=1e-3), "lam must be a finite number >= 0"),
        (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, delta=0.0), "delta must be a finite number > 0"),
        (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, delta=1e-3, probe="sobol"),
         "probe must be one of rademacher, gaussian"),
        (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, delta=1e-3, n_probes=0), "n_probes"),
        (lambda m, b: NSAM(m, b, rho=0.1, data=(X_ALL, Y_ALL[:5])),
         "data: targets has 5 samples but inputs has 32"),
        (lambda m, b: NSAM(m, b, rho=0.1, data=(X_ALL, Y_ALL), chunk_size=0), "chunk_size"),
    ],
)
def test_bad_hyper_parameters_are_rejected_by_name(factory, message: str) -> None:
    model = mlp()
    with pytest.raises(ValueError, match=message):
        factory(model, sgd(model))


@pytest.mark.parametrize("backend", ["loop", "vmap"])
def test_msam_remainder_micro_batch_is_weighted_by_its_size(backend: str) -> None:
    """m = 5 on 16 samples: micro-batches of 5, 5, 5, 1; the descent gradient is
    Σ_j (|I_j|/16) ∇f_{I_j}(w + e_j), computed here one micro-batch at a time."""
    model, reference = mlp(), mlp()
    opt = MSAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, m=5, backend=backend)
    x, y = batch()
    stats = opt.step(x, y, CE)
    w = [p.detach().clone() for p in reference.parameters()]
    total = [torch.zeros_like(p) for p in w]
    for start in range(0, 16, 5):
        xs, ys = x[start : start + 5], y[start : start + 5]
        g = torch.autograd.grad(CE(reference(xs), ys).mean(), list(reference.parameters()))
        norm = torch.sqrt(sum((t**2).sum() for t in g))
        with torch.no_grad():
            for p, t in zip(reference.parameters(), g):
                p.add_(0.1 * t / (norm + 1e-12))
        g2 = torch.autograd.grad(CE(reference(xs), ys).mean(), list(reference.parameters()))
        with torch.no_grad():
            for p, v in zip(reference.parameters(), w):
                p.copy_(v)
        for acc, t in zip(total, g2):
            acc += t * len(xs) / 16
    with torch.no_grad():
        for p, t in zip(reference.parameters(), total):
            p.sub_(0.1 * t)
    assert_params_equal(model, reference, atol=1e-12)
    torch.testing.assert_close(stats.loss, CE(mlp()(x), y).mean(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["n-sam", "m-sam-m4-loop", "rw-sam"])
def test_only_sam_accepts_a_closure(name: str) -> None:
    model = mlp()
    opt = FACTORIES[name](model, sgd(model))
    with pytest.raises(ValueError, match="only SAM accepts a closure"):
        opt.step(lambda: torch.zeros(()))


SCALED = NAMES
FACTORIES32 = factories(data=(X_ALL.float(), Y_ALL))


@pytest.mark.parametrize("name", SCALED)
def test_gradscaler_steps_equal_unscaled_steps(name: str) -> None:
    """Scaling by a power of two is exact, so a scaled step equals the unscaled one (float32)."""
    a, b = mlp(dtype=torch.float32), mlp(dtype=torch.float32)
    opt_a, opt_b = FACTORIES32[name](a, sgd(a)), FACTORIES32[name](b, sgd(b))
    opt_a.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for s in range(3):
        x, y = batch(seed=s, dtype=torch.float32)
        sa, sb = opt_a.step(x, y, CE), opt_b.step(x, y, CE)
        torch.testing.assert_close(sa.grad_norm, sb.grad_norm, rtol=1e-6, atol=0)
        assert not bool(sa.skipped)
    assert_params_equal(a, b, atol=1e-6)


@pytest.mark.parametrize("name", SCALED)
@pytest.mark.parametrize("which", ["first-call", "last-call"])
def test_gradscaler_overflow_in_either_pass_skips_the_step_and_lowers_the_scale(
    name: str, which: str
) -> None:
    model = mlp(bn=True, dtype=torch.float32)
    opt = FACTORIES32[name](model, sgd(model))
    opt.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = batch(dtype=torch.float32)
    opt.step(x, y, CE)
    counting = NaNAt(set())
    opt.step(x, y, counting)
    before, scale = snapshot(model, opt), opt.scaler.get_scale()
    stats = opt.step(x, y, NaNAt({1 if which == "first-call" else counting.count}))
    assert bool(stats.skipped)
    assert_same(before, snapshot(model, opt))
    assert opt.scaler.get_scale() == scale / 2
