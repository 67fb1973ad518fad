"""The optimizers inside real training code: copies and pickles, closures after accumulation, skipped
steps with bases that keep state in their groups, parameters outside the base optimizer, GradScaler
recovery, checkpoints torch loads, torch.distributed.checkpoint, schedulers, the hand loop."""

from __future__ import annotations

import copy
import io
import pickle
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM
from tests.optim.helpers import CE, batch, mlp, sgd
from tests.optim.test_loops import assert_unchanged, everything


def _kept(model: nn.Module, opt: Any) -> dict[str, object]:
    """What a skipped step keeps: weights, buffers, the base optimizer's state and settings."""
    return copy.deepcopy({
        "params": [p.detach() for p in model.parameters()],
        "buffers": list(model.buffers()),
        "state": opt.base.state_dict()["state"],
        "groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups],
    })


def _bad(x: Tensor) -> Tensor:
    out = x.clone()
    out[0, 0] = float("nan")
    return out


# ----------------------------------------------------------------------------- copies
def test_a_deep_copy_with_a_scheduler_attached_trains_its_own_model() -> None:
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.05)
    torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    original = [p.detach().clone() for p in model.parameters()]
    clone = copy.deepcopy(opt)
    x, y = batch()
    clone.step(x, y, CE)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), original))
    assert not all(torch.equal(p, q) for p, q in zip(clone.model.parameters(), original))
    # and the copy is the same optimizer: one step of each from the same weights agrees bit for bit
    opt.step(x, y, CE)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), clone.model.parameters()))


def test_pickle_and_torch_save_work_after_a_step_with_a_local_loss_and_a_scheduler() -> None:
    model = mlp()
    opt = RWSAM(model, sgd(model), rho=0.05, lam=1.0, seed=3)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    x, y = batch()
    opt.step(x, y, lambda out, t: CE(out, t))  # a lambda is not picklable: it must not be held
    again = pickle.loads(pickle.dumps(opt))
    buffer = io.BytesIO()
    torch.save(opt, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for restored in (again, loaded):
        restored.step(x, y, CE)
        opt_copy = copy.deepcopy(opt)
        opt_copy.step(x, y, CE)
        for p, q in zip(restored.model.parameters(), opt_copy.model.parameters()):
            assert torch.equal(p, q)  # the probe generator travelled with it


# ----------------------------------------------------------------------------- closure contract
def _closure(model: nn.Module, x: Tensor, y: Tensor) -> Any:
    def closure() -> Tensor:
        loss = CE(model(x), y).mean()
        loss.backward()
        return loss
    return closure


def test_gradients_accumulated_before_step_closure_are_refused_and_nothing_changes() -> None:
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.05)
    x, y = batch()
    opt.zero_grad()
    _closure(model, x[:8], y[:8])()  # Lightning's accumulate_grad_batches=2: a backward, no step
    before = everything(model, opt)
    with pytest.raises(ValueError, match="accumulated outside step\\(closure\\).*accumulate_grad_batches"):
        opt.step(_closure(model, x[8:], y[8:]))
    assert_unchanged(before, everything(model, opt))


def test_closure_steps_after_zero_grad_or_after_a_step_run() -> None:
    """What Lightning's automatic optimization does without accumulation: the closure zeroes the
    gradients itself, and between steps the gradients are those the last step left."""
    model, reference = mlp(), mlp()
    opt = SAM(model, sgd(model), rho=0.05)
    ref = SAM(reference, sgd(reference), rho=0.05)
    x, y = batch()
    for _ in range(2):
        opt.step(_closure(model, x, y))
        ref.step(x, y, CE)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-14, rtol=0)
    opt.zero_grad(set_to_none=False)  # zeroed in place: still the optimizer's own gradients
    opt.step(_closure(model, x, y))


def test_a_closure_step_after_a_step_that_raised_is_not_refused_as_accumulated() -> None:
    """A step that raises puts the gradients back as they were: they are the last step's, not
    gradients accumulated since, so the closure step that follows runs and equals the batch API's."""
    model, reference = mlp(), mlp()
    opt, ref = SAM(model, sgd(model), rho=0.05), SAM(reference, sgd(reference), rho=0.05)
    x, y = batch()
    calls = []

    def fails_in_pass_2(out: Tensor, t: Tensor) -> Tensor:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return CE(out, t)

    opt.step(x, y, CE)
    ref.step(x, y, CE)
    with pytest.raises(RuntimeError, match="boom"):
        opt.step(x, y, fails_in_pass_2)

    def closure() -> Tensor:
        loss = CE(model(x), y).mean()
        loss.backward()
        return loss

    opt.step(closure)
    ref.step(x, y, CE)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_the_perturbed_flag_is_set_only_during_the_pass_at_w_plus_e() -> None:
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.05)
    x, y = batch()
    seen: list[bool] = []

    def closure() -> Tensor:
        seen.append(opt.perturbed)
        loss = CE(model(x), y).mean()
        loss.backward()
        return loss

    opt.step(closure)
    assert seen == [False, True] and not opt.perturbed


# ----------------------------------------------------------------------------- skipped steps
class GroupCounterAdam(torch.optim.Optimizer):
    """Adam whose step counter lives in the parameter group (AdamP, Lamb, ... keep it there)."""

    def __init__(self, params: Any, lr: float = 1e-2) -> None:
        super().__init__(params, {"lr": lr, "step": 0})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            group["step"] += 1
            t = group["step"]
            for p in group["params"]:
                st = self.state[p]
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                st["m"].lerp_(p.grad, 0.1)
                st["v"].lerp_(p.grad**2, 0.001)
                p.sub_(group["lr"] * (st["m"] / (1 - 0.9**t)) / ((st["v"] / (1 - 0.999**t)).sqrt() + 1e-8))


class ProdigyLike(torch.optim.Optimizer):
    """A step size ``d`` estimated in the group from the gradients (as Prodigy does), and a state
    entry rebound to a new tensor every step (as Lamb's ``trust_ratio``)."""

    def __init__(self, params: Any) -> None:
        super().__init__(params, {"lr": 1.0, "d": 1e-3})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            gnorm = sum(float(p.grad.norm()) for p in group["params"])
            group["d"] = max(group["d"], 1e-3 * gnorm)
            for p in group["params"]:
                self.state[p]["ratio"] = p.grad.abs().mean().reshape(1)  # rebound, not updated in place
                p.sub_(group["lr"] * group["d"] * p.grad)


@pytest.mark.parametrize("base_cls", [GroupCounterAdam, ProdigyLike])
def test_a_skipped_step_is_bit_exact_for_bases_with_state_in_their_groups(base_cls: type) -> None:
    x, y = batch()
    runs = []
    for with_bad in (True, False):
        model = mlp()
        opt = SAM(model, base_cls(model.parameters()), rho=0.05)
        for i in range(4):
            if with_bad and i == 2:
                before = _kept(model, opt)
                assert bool(opt.step(_bad(x), y, CE).skipped)
                assert_unchanged(before, _kept(model, opt))
            assert not bool(opt.step(x, y, CE).skipped)
        runs.append(model)
    for p, q in zip(*(m.parameters() for m in runs)):
        assert torch.equal(p, q)


def test_a_step_post_hook_of_the_base_never_sees_a_skipped_step() -> None:
    model = mlp()
    base = sgd(model)
    opt = SAM(model, base, rho=0.05)
    seen: list[bool] = []
    base.register_step_post_hook(lambda o, a, k: seen.append(all(bool(torch.isfinite(p).all())
                                                                  for p in model.parameters())))
    x, y = batch()
    opt.step(x, y, CE)
    opt.step(x, y, CE)
    assert bool(opt.step(_bad(x), y, CE).skipped)
    assert seen == [True, True]  # the hook (an EMA, say) ran for the two real steps only


def test_a_nan_learning_rate_is_refused_before_the_step_and_a_nan_tensor_one_is_skipped() -> None:
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.05)
    x, y = batch()
    opt.step(x, y, CE)
    opt.param_groups[0]["lr"] = float("nan")
    before = {k: v for k, v in everything(model, opt).items() if k != "state"}
    with pytest.raises(ValueError, match="param_groups\\[0\\]\\['lr'\\] is nan"):
        opt.step(x, y, CE)
    assert_unchanged(before, {k: v for k, v in everything(model, opt).items() if k != "state"})
    opt.param_groups[0]["lr"] = torch.tensor(float("nan"), dtype=torch.float64)
    weights = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.base.state_dict()["state"])
    assert bool(opt.step(x, y, CE).skipped)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), weights))
    assert_unchanged(state, opt.base.state_dict()["state"])  # the momentum buffers too


# ----------------------------------------------------------------------------- parameters outside the base
FACTORIES = {
    "sam": lambda m, b, x, y: SAM(m, b, rho=0.1),
    "m-sam loop, m = B": lambda m, b, x, y: MSAM(m, b, rho=0.1, m=len(x), backend="loop"),
    "m-sam vmap, m = B": lambda m, b, x, y: MSAM(m, b, rho=0.1, m=len(x), backend="vmap"),
    "rw-sam, lam = 0": lambda m, b, x, y: RWSAM(m, b, rho=0.1, lam=0.0, seed=0),
    "n-sam, data = batch": lambda m, b, x, y: NSAM(m, b, rho=0.1, data=(x, y)),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_parameters_outside_the_base_get_the_descent_gradient_at_the_perturbed_point(name: str) -> None:
    """With the base over layer 0 only, every variant that reduces to SAM leaves on the head the
    gradient of the batch loss at (w0 + e, head), e built from layer 0's gradient alone."""
    model = mlp()
    x, y = batch()
    first = list(model[0].parameters())
    # the reference, by hand: e from layer 0's gradient, then the head's gradient at w0 + e
    ref = copy.deepcopy(model)
    g = torch.autograd.grad(CE(ref(x), y).mean(), list(ref[0].parameters()))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g]))
    with torch.no_grad():
        for p, t in zip(ref[0].parameters(), g):
            p.add_(0.1 * t / (norm + 1e-12))
    expected = torch.autograd.grad(CE(ref(x), y).mean(), list(ref[-1].parameters()))
    opt = FACTORIES[name](model, torch.optim.SGD(first, lr=0.1), x, y)
    opt.step(x, y, CE)
    for p, e in zip(model[-1].parameters(), expected):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, e, atol=1e-12, rtol=0)


def test_the_closure_form_leaves_outside_parameters_the_descent_gradient_too() -> None:
    model, other = mlp(), mlp()
    x, y = batch()
    SAM(model, torch.optim.SGD(model[0].parameters(), lr=0.1), rho=0.1).step(_closure(model, x, y))
    SAM(other, torch.optim.SGD(other[0].parameters(), lr=0.1), rho=0.1).step(x, y, CE)
    for p, q in zip(model[-1].parameters(), other[-1].parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-14, rtol=0)


def test_per_group_rho_is_refused_with_what_to_do() -> None:
    model = mlp()
    base = torch.optim.SGD([{"params": model[0].parameters(), "rho": 0.0},
                            {"params": model[-1].parameters()}], lr=0.1)
    with pytest.raises(ValueError, match="param_groups\\[0\\].*\\['rho'\\].*second optimizer"):
        SAM(model, base, rho=0.05)


# ----------------------------------------------------------------------------- scaler, state dicts
def test_after_an_exception_inside_a_scaled_step_the_next_step_runs() -> None:
    model, reference = mlp(), mlp()
    base = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt = SAM(model, base, rho=0.05, scaler=torch.amp.GradScaler("cpu"))
    ref = SAM(reference, torch.optim.Adam(reference.parameters(), lr=1e-2), rho=0.05,
              scaler=torch.amp.GradScaler("cpu"))

    def oom(*_: object) -> None:
        raise RuntimeError("out of memory (simulated)")

    handle = base.register_step_pre_hook(oom)
    x, y = batch()
    with pytest.raises(RuntimeError, match="simulated"):
        opt.step(x, y, CE)
    handle.remove()
    assert not bool(opt.step(x, y, CE).skipped)
    ref.step(x, y, CE)
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


def test_a_grad_scaler_stepping_the_optimizer_itself_is_refused_and_the_weights_stay() -> None:
    """A plain AMP loop's ``scaler.step(opt)`` calls ``opt.step()`` with no argument: the error names
    that caller and the constructor's ``scaler=`` instead (the Lightning route is in test_frameworks)."""
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**4)
    x, y = batch()
    scaler.scale(CE(model(x), y).mean()).backward()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"called by GradScaler\.step\(opt\) without the batch.*scaler="):
        scaler.step(opt)
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)


def test_no_host_synchronisation_after_the_first_step_with_a_scaler() -> None:
    from sam_tutorial.engine.cost import count_ops

    model = mlp(dtype=torch.float32)
    opt = SAM(model, sgd(model), rho=0.05, scaler=torch.amp.GradScaler("cpu"))
    x, y = batch(dtype=torch.float32)
    opt.step(x, y, CE)
    assert count_ops(lambda: opt.step(x, y, CE)).syncs == 0
    assert count_ops(lambda: opt.step(_bad(x), y, CE)).syncs == 0


def _checkpoint_cases() -> dict[str, Any]:
    def initial_lr(m: nn.Module) -> torch.optim.Optimizer:
        b = sgd(m)
        torch.optim.lr_scheduler.StepLR(b, step_size=1)  # adds 'initial_lr' to the groups
        return b

    return {
        "a scheduler's initial_lr": (initial_lr, sgd),
        "a key the base adds in step()": (lambda m: GroupCounterAdam(m.parameters()),
                                          lambda m: GroupCounterAdam(m.parameters())),
        "torch.optim.Adafactor": (lambda m: torch.optim.Adafactor(m.parameters()),
                                  lambda m: torch.optim.Adafactor(m.parameters())),
    }


@pytest.mark.parametrize("case", list(_checkpoint_cases()))
def test_valid_checkpoints_load_and_resume_like_the_base(case: str) -> None:
    saving, loading = _checkpoint_cases()[case]
    model = mlp()
    opt = SAM(model, saving(model), rho=0.05)
    x, y = batch()
    opt.step(x, y, CE)
    sd = copy.deepcopy(opt.state_dict())
    fresh = copy.deepcopy(model)
    resumed = SAM(fresh, loading(fresh), rho=0.05)
    resumed.load_state_dict(sd)
    plain = loading(copy.deepcopy(model))
    plain.load_state_dict({k: v for k, v in copy.deepcopy(sd).items() if k != "sam"})
    assert resumed.base.state_dict()["param_groups"] == plain.state_dict()["param_groups"]


def test_a_nan_momentum_buffer_in_a_checkpoint_is_refused_and_nothing_changes() -> None:
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.05)
    x, y = batch()
    opt.step(x, y, CE)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["momentum_buffer"][0, 0] = float("nan")
    before = everything(model, opt)
    with pytest.raises(ValueError, match="'momentum_buffer'.*NaN or infinite"):
        opt.load_state_dict(sd)
    assert_unchanged(before, everything(model, opt))
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["lr"] = float("nan")
    with pytest.raises(ValueError, match="param_groups\\[0\\]\\['lr'\\] is nan"):
        opt.load_state_dict(sd)


def test_rwsam_generator_states_load_all_or_nothing() -> None:
    model = mlp()
    opt = RWSAM(model, sgd(model), rho=0.05, lam=1.0, seed=1)
    x, y = batch()
    opt.step(x, y, CE)
    good = copy.deepcopy(opt.state_dict())
    truncated = copy.deepcopy(good)
    truncated["sam"]["probe_rng"]["cpu"] = truncated["sam"]["probe_rng"]["cpu"][:100]
    truncated["state"][0]["momentum_buffer"].mul_(2)  # would be loaded first by a half-way load
    before = everything(model, opt)
    with pytest.raises(ValueError, match="not a valid cpu generator state.*truncated"):
        opt.load_state_dict(truncated)
    assert_unchanged(before, everything(model, opt))
    from_gpu = copy.deepcopy(good)
    from_gpu["sam"]["probe_rng"] = {"cuda:0": torch.zeros(16, dtype=torch.uint8)}
    with pytest.raises(ValueError, match="generator of a cuda device.*del sd\\['sam'\\]\\['probe_rng'\\]"):
        opt.load_state_dict(from_gpu)
    assert_unchanged(before, everything(model, opt))
    del from_gpu["sam"]["probe_rng"]  # what the message says to do: probes restart from the seed
    opt.load_state_dict(from_gpu)
    assert not bool(opt.step(x, y, CE).skipped)


def test_torch_distributed_checkpoint_initialises_a_fresh_optimizer() -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_optimizer_state_dict

    model = mlp()
    opt = SAM(model, torch.optim.AdamW(model.parameters(), lr=1e-2), rho=0.05)
    x, y = batch()
    opt.step(x, y, CE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = copy.deepcopy(get_state_dict(model, opt)[1])  # DCP returns the live state tensors
        fresh_model = copy.deepcopy(model)
        fresh = SAM(fresh_model, torch.optim.AdamW(fresh_model.parameters(), lr=1e-2), rho=0.05)
        set_optimizer_state_dict(fresh_model, fresh, saved)
    assert fresh.param_groups[0]["lr"] == 1e-2
    opt.step(x, y, CE)
    fresh.step(x, y, CE)
    for p, q in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(p, q)


def test_torch_distributed_checkpoint_set_state_dict_resumes_model_and_optimizer_together() -> None:
    """DCP's combined ``set_state_dict`` (model and optimizer in one call) on a fresh model and
    optimizer: the next step equals the original's, bit for bit."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model = mlp()
    opt = SAM(model, torch.optim.AdamW(model.parameters(), lr=1e-2), rho=0.05)
    x, y = batch()
    opt.step(x, y, CE)
    fresh_model = mlp(seed=3)
    fresh = SAM(fresh_model, torch.optim.AdamW(fresh_model.parameters(), lr=1e-2), rho=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_sd, optim_sd = copy.deepcopy(get_state_dict(model, opt))
        set_state_dict(fresh_model, fresh, model_state_dict=model_sd, optim_state_dict=optim_sd)
    opt.step(x, y, CE)
    fresh.step(x, y, CE)
    for p, q in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(p, q)


def test_a_scheduler_on_the_wrapper_acts_after_loading_into_the_base() -> None:
    model = mlp()
    base = sgd(model)
    opt = SAM(model, base, rho=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    base.load_state_dict(copy.deepcopy(base.state_dict()))
    x, y = batch()
    for _ in range(3):
        opt.step(x, y, CE)
        scheduler.step()
    assert opt.param_groups is base.param_groups
    assert base.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_rwsam_without_a_seed_leaves_the_global_generator_alone() -> None:
    model = mlp()
    torch.manual_seed(5)
    SAM(model, sgd(model), rho=0.05)
    after_sam = torch.rand(3)
    torch.manual_seed(5)
    RWSAM(model, sgd(model), rho=0.05, lam=1.0)
    assert torch.equal(torch.rand(3), after_sam)


# ----------------------------------------------------------------------------- the hand loop
def test_restore_abandons_a_first_step_bit_exactly() -> None:
    model = mlp(bn=True)
    opt = SAM(model, sgd(model), rho=0.05)
    x, y = batch()
    before = [t.detach().clone() for t in [*model.parameters(), *model.buffers()]]
    CE(model(x), y).mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    opt.first_step()
    model(x)  # part of the pass at w + e, then an interrupt
    opt.restore()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(torch.equal(p, q) for p, q in zip(model.buffers(), buffers))
    opt.zero_grad()
    assert not bool(opt.step(x, y, CE).skipped)  # nothing pending any more
    with pytest.raises(RuntimeError, match="without a pending first_step"):
        opt.restore()


def test_a_scheduler_on_the_hand_loop_does_not_warn() -> None:
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    x, y = batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CE(model(x), y).mean().backward()
        opt.first_step()
        CE(model(x), y).mean().backward()
        opt.second_step(zero_grad=True)
        scheduler.step()


def test_a_checkpoint_saved_with_capturable_adam_resumes_on_the_cpu() -> None:
    """What an earlier version wrote on a GPU (the engine's capturable=True) loads and steps on a CPU."""
    model = mlp()
    opt = SAM(model, torch.optim.AdamW(model.parameters(), lr=1e-3), rho=0.05)
    x, y = batch()
    opt.step(x, y, CE)
    sd = copy.deepcopy(opt.state_dict())
    for g in sd["param_groups"]:
        g["capturable"] = True
    fresh = copy.deepcopy(model)
    resumed = SAM(fresh, torch.optim.AdamW(fresh.parameters(), lr=1e-3), rho=0.05)
    resumed.load_state_dict(sd)
    assert sd["param_groups"][0]["capturable"] is True  # the caller's dict is not changed
    resumed.step(x, y, CE)
    opt.step(x, y, CE)
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
