"""The optimizers in other people's training loops: closures as frameworks call them, hand-written
loops, GradScaler idioms, frozen layers, exceptions, dict batches and Hugging Face-style models, clipping,
checkpoints that torch tooling reads. Every test compares two independent computations or checks an
invariant exactly."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM
from sam_tutorial.optim.base import PerturbedOptimizer
from tests.optim.helpers import CE, assert_params_equal, batch, lsq_grad, mlp, regression, sgd
from tests.optim.test_contract import FACTORIES, NAMES  # every registered variant


def everything(model: nn.Module, opt: PerturbedOptimizer) -> dict[str, object]:
    """All a step may change: weights, buffers, gradients, base state, the global and the probe RNG."""
    return copy.deepcopy({
        "params": [p.detach() for p in model.parameters()],
        "buffers": list(model.buffers()),
        "grads": [None if p.grad is None else p.grad.detach() for p in model.parameters()],
        "state": opt.base.state_dict(),
        "rng": torch.get_rng_state(),
        "sam": opt.state_dict()["sam"],
    })


def assert_unchanged(a: object, b: object) -> None:
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_unchanged(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_unchanged(x, y)
    else:
        assert a == b


# ----------------------------------------------------------------------------- 4: BatchNorm on a skip
def test_skipped_closure_step_keeps_batchnorm_buffers() -> None:
    model = mlp(bn=True)
    opt = SAM(model, sgd(model), rho=0.1)
    x, y = batch()
    before = [b.clone() for b in model.buffers()]
    calls = []

    def closure() -> Tensor:
        calls.append(1)
        loss = CE(model(x), y).mean() * (float("nan") if len(calls) == 2 else 1.0)
        loss.backward()
        return loss

    opt.step(closure)
    for a, b in zip(before, model.buffers()):
        assert torch.equal(a, b)


def test_skipped_hand_loop_keeps_the_buffers_of_pass_1() -> None:
    model = mlp(bn=True)
    opt = SAM(model, sgd(model), rho=0.1)
    x, y = batch()
    CE(model(x), y).mean().backward()
    after_pass_1 = [b.clone() for b in model.buffers()]
    opt.first_step()
    (CE(model(x), y).mean() * float("nan")).backward()
    assert bool(opt.second_step())
    for a, b in zip(after_pass_1, model.buffers()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- 5: disabled GradScaler
@pytest.mark.parametrize("name", ["sam", "usam", "m-sam-m4-loop", "m-sam-m4-vmap", "rw-sam"])
def test_disabled_gradscaler_is_no_scaler(name: str) -> None:
    a, b = mlp(), mlp()
    opt_a = FACTORIES[name](a, sgd(a))
    opt_b = FACTORIES[name](b, sgd(b))
    opt_b.scaler = torch.amp.GradScaler("cpu", enabled=False)
    for s in range(2):
        x, y = batch(seed=s)
        torch.manual_seed(s)
        sa = opt_a.step(x, y, CE)
        torch.manual_seed(s)
        sb = opt_b.step(x, y, CE)
        for u, v in zip(sa, sb):
            assert (u is None and v is None) or torch.equal(u, v)
    assert_params_equal(a, b)


# ----------------------------------------------------------------------------- 6: unfrozen layers
def test_layers_unfrozen_after_the_first_step_are_perturbed_and_protected() -> None:
    def run(freeze_first: bool) -> nn.Module:
        model = mlp()
        base = torch.optim.SGD(model.parameters(), lr=0.0)
        opt = SAM(model, base, rho=0.1)
        model[0].requires_grad_(not freeze_first)
        opt.step(*batch(seed=1), CE)  # lr 0: nothing moves, but the optimizer has seen the model
        model[0].requires_grad_(True)
        base.param_groups[0]["lr"] = 0.1
        opt.step(*batch(seed=2), CE)
        return model

    assert_params_equal(run(True), run(False))  # the unfrozen layer is perturbed like the others
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.1)
    model[0].requires_grad_(False)
    opt.step(*batch(seed=1), CE)
    opt.step(*batch(seed=1), CE)
    model[0].requires_grad_(True)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = batch(seed=2)
    assert bool(opt.step(x, y, lambda out, t: CE(out, t) * float("nan")).skipped)
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)  # not NaN: the unfrozen layer is inside the skip protection


# ----------------------------------------------------------------------------- 7 and 11: the closure
def _closure_runs(call: Callable[[SAM, Callable[[], Tensor]], object], zero: bool) -> nn.Module:
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.1)
    x, y = batch()

    def closure() -> Tensor:
        if zero:
            opt.zero_grad()
        loss = CE(model(x), y).mean()
        loss.backward()
        return loss

    for _ in range(2):
        call(opt, closure)
    return model


def test_closure_by_keyword_or_without_zeroing_equals_the_batch_api() -> None:
    reference = mlp()
    opt = SAM(reference, sgd(reference), rho=0.1)
    for _ in range(2):
        opt.step(*batch(), CE)
    assert_params_equal(_closure_runs(lambda o, c: o.step(closure=c), zero=True), reference, atol=1e-12)
    assert_params_equal(_closure_runs(lambda o, c: o.step(c), zero=False), reference, atol=1e-12)


def test_step_without_arguments_says_what_to_do() -> None:
    model = mlp()
    opt = MSAM(model, sgd(model), rho=0.1, m=4)
    with pytest.raises(ValueError, match="needs the batch.*GradScaler.step"):
        opt.step()


# ----------------------------------------------------------------------------- 8: exception safety
class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("warm", [False, True])
def test_an_exception_in_the_last_pass_changes_nothing(name: str, warm: bool) -> None:
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.2), nn.Tanh(),
                          nn.Linear(8, 3)).double()
    opt = FACTORIES[name](model, sgd(model))
    x, y = batch()
    if warm:
        opt.step(x, y, CE)
    count = []

    def counting(out: Tensor, t: Tensor) -> Tensor:
        count.append(1)
        return CE(out, t)

    probe = copy.deepcopy((model, opt))
    probe[1].step(x, y, counting)  # how many loss calls one step makes, on a copy
    calls, count[:] = len(count), []

    def failing(out: Tensor, t: Tensor) -> Tensor:
        count.append(1)
        if len(count) == calls:
            raise Boom("out of memory in the last pass")
        return CE(out, t)

    before = everything(model, opt)
    with pytest.raises(Boom):
        opt.step(x, y, failing)
    assert_unchanged(before, everything(model, opt))
    opt.step(x, y, CE)  # and the optimizer still works


# ----------------------------------------------------------------------------- 9: host synchronisation
@pytest.mark.parametrize("make", [
    lambda ps: torch.optim.SGD(ps, lr=0.1),
    lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: torch.optim.Adam(ps, lr=1e-3),
    lambda ps: torch.optim.AdamW(ps, lr=1e-3),
], ids=["sgd", "sgd-momentum", "adam", "adamw"])
def test_no_host_decision_after_the_first_step(make, monkeypatch) -> None:
    """After the first step the skip is decided on the device: no tensor is converted to a bool
    (on CUDA each such conversion is a host synchronisation; see test_gpu.py)."""
    model = mlp()
    opt = SAM(model, make(model.parameters()), rho=0.1)
    x, y = batch()
    opt.step(x, y, CE)
    conversions = []
    original = torch.Tensor.__bool__

    def counting(self: Tensor) -> bool:
        conversions.append(1)
        return original(self)

    monkeypatch.setattr(torch.Tensor, "__bool__", counting)
    opt.step(x, y, CE)
    opt.step(x, y, CE)
    monkeypatch.undo()
    assert conversions == []


# ----------------------------------------------------------------------------- 10: diagnostics
def test_grad_norm_is_unscaled_with_the_scale_of_the_step() -> None:
    a, b = mlp(dtype=torch.float32), mlp(dtype=torch.float32)
    x, y = batch(dtype=torch.float32)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1)
    opt_a = SAM(a, sgd(a), rho=0.1, scaler=scaler)
    opt_b = SAM(b, sgd(b), rho=0.1)
    for _ in range(3):  # the scale doubles after every step
        sa, sb = opt_a.step(x, y, CE), opt_b.step(x, y, CE)
        torch.testing.assert_close(sa.grad_norm, sb.grad_norm, rtol=1e-6, atol=0)
    assert scaler.get_scale() == 2.0**11


def test_asam_reports_the_norm_of_the_actual_perturbation() -> None:
    model = mlp()
    seen: list[list[Tensor]] = []
    model.register_forward_pre_hook(
        lambda mod, args: seen.append([p.detach().clone() for p in mod.parameters()])
    )
    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.5, adaptive=True)
    stats = opt.step(*batch(), CE)
    e = torch.cat([(q - p).flatten() for p, q in zip(seen[0], seen[1])])
    torch.testing.assert_close(stats.perturbation_norm, e.norm(), atol=1e-12, rtol=0)
    assert abs(float(stats.perturbation_norm) - 0.5) > 0.01


# ----------------------------------------------------------------------------- 11: smaller
def test_the_batch_api_works_under_no_grad() -> None:
    a, b = mlp(), mlp()
    opt_a, opt_b = SAM(a, sgd(a), rho=0.1), SAM(b, sgd(b), rho=0.1)
    opt_a.step(*batch(), CE)
    with torch.no_grad():
        opt_b.step(*batch(), CE)
    assert_params_equal(a, b)


def test_numpy_scalars_are_numbers() -> None:
    for make_np, make_py in [
        (lambda m: SAM(m, sgd(m), rho=np.float32(0.125)), lambda m: SAM(m, sgd(m), rho=0.125)),
        (lambda m: MSAM(m, sgd(m), rho=0.1, m=np.int64(4)), lambda m: MSAM(m, sgd(m), rho=0.1, m=4)),
        (lambda m: RWSAM(m, sgd(m), rho=0.1, lam=np.float64(2.0), seed=np.int64(1)),
         lambda m: RWSAM(m, sgd(m), rho=0.1, lam=2.0, seed=1)),
    ]:
        a, b = mlp(), mlp()
        make_np(a).step(*batch(), CE)
        make_py(b).step(*batch(), CE)
        assert_params_equal(a, b)


class ComplexLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.weight = nn.Parameter(torch.randn(5, 3, dtype=torch.complex128))

    def forward(self, x: Tensor) -> Tensor:
        return (x.to(torch.complex128) @ self.weight).abs()


def test_complex_parameters_step_and_skip() -> None:
    model = ComplexLinear()
    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.1)
    x, y = batch()
    assert not bool(opt.step(x, y, CE).skipped)
    before = model.weight.detach().clone()
    assert bool(opt.step(x, y, lambda out, t: CE(out, t) * float("nan")).skipped)
    assert torch.equal(before, model.weight)


# ----------------------------------------------------------------------------- any batch, any model
class TinyClassifier(nn.Module):
    """Behaves like a Hugging Face sequence classifier: keyword inputs, an attention mask, a dict out."""

    def __init__(self, vocab: int = 11, dim: int = 6, classes: int = 3, dataclass_out: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, dim, dtype=torch.float64)
        self.head = nn.Linear(dim, classes, dtype=torch.float64)
        self.dataclass_out = dataclass_out

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None) -> object:
        mask = attention_mask.unsqueeze(-1).to(torch.float64)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1)
        logits = self.head(torch.tanh(pooled))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = CE(logits, labels).mean()
        return Output(logits) if self.dataclass_out else out


@dataclass
class Output:
    logits: Tensor


def text_batch(n: int = 12, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 7, (n,), generator=g)
    mask = (torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)).long()
    return {"input_ids": torch.randint(0, 11, (n, 7), generator=g), "attention_mask": mask,
            "labels": torch.randint(0, 3, (n,), generator=g)}


def per_sample(model: nn.Module, b: dict[str, Tensor]) -> Tensor:
    """The user's own forward and per-sample loss (a sample weight from the mask, say)."""
    out = model(**b)
    return CE(out["logits"], b["labels"]) * b["attention_mask"].sum(1) / 7


@pytest.mark.parametrize("dataclass_out", [False, True])
def test_hugging_face_style_model_with_dict_batches(dataclass_out: bool) -> None:
    b = text_batch()
    inputs = {k: v for k, v in b.items() if k != "labels"}
    a, c = TinyClassifier(dataclass_out=dataclass_out), TinyClassifier(dataclass_out=dataclass_out)
    SAM(a, sgd(a), rho=0.1).step(inputs, b["labels"], CE)  # model(**inputs), then its logits
    SAM(c, sgd(c), rho=0.1).step(b, lambda m, bb: CE(m(**bb).logits if dataclass_out else m(**bb)["logits"],
                                                     bb["labels"]))
    assert_params_equal(a, c)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), TinyClassifier().parameters()))


@pytest.mark.parametrize("backend", ["loop", "vmap"])
def test_msam_and_nsam_split_dict_batches(backend: str) -> None:
    b = text_batch()
    ref = TinyClassifier()
    SAM(ref, sgd(ref), rho=0.1).step(b, per_sample)
    for make in (lambda m: MSAM(m, sgd(m), rho=0.1, m=12, backend=backend),
                 lambda m: NSAM(m, sgd(m), rho=0.1, data=b, chunk_size=5)):
        model = TinyClassifier()
        make(model).step(b, per_sample)
        assert_params_equal(model, ref, atol=1e-12)
    # m = 4 by the optimizer equals m-SAM done by hand over the three dict micro-batches of 4
    m4, hand = TinyClassifier(), TinyClassifier()
    MSAM(m4, torch.optim.SGD(m4.parameters(), lr=0.1), rho=0.1, m=4, backend=backend).step(b, per_sample)
    w = [p.detach().clone() for p in hand.parameters()]
    total = [torch.zeros_like(p) for p in w]
    for j in range(3):
        part = {k: v[4 * j : 4 * j + 4] for k, v in b.items()}
        g = torch.autograd.grad(per_sample(hand, part).mean(), list(hand.parameters()))
        norm = torch.sqrt(sum((t**2).sum() for t in g))
        with torch.no_grad():
            for p, t in zip(hand.parameters(), g):
                p.add_(0.1 * t / (norm + 1e-12))
        g2 = torch.autograd.grad(per_sample(hand, part).mean(), list(hand.parameters()))
        with torch.no_grad():
            for p, v in zip(hand.parameters(), w):
                p.copy_(v)
        for acc, t in zip(total, g2):
            acc += t / 3
    with torch.no_grad():
        for p, t in zip(hand.parameters(), total):
            p.sub_(0.1 * t)
    assert_params_equal(m4, hand, atol=1e-12)


def test_rwsam_takes_dict_batches_in_both_score_modes() -> None:
    """A dict batch with loss_fn(model, batch) gives the same Gibbs weights and the same step as the
    (inputs, targets, loss_fn) form of the same batch, and the weights are not uniform."""
    b = text_batch()
    inputs = {k: v for k, v in b.items() if k != "labels"}
    for score in ("finite-difference", "exact"):
        a, c = TinyClassifier(), TinyClassifier()
        opt_a = RWSAM(a, sgd(a), rho=0.1, lam=1.0, score=score, seed=0)
        opt_c = RWSAM(c, sgd(c), rho=0.1, lam=1.0, score=score, seed=0)
        stats = opt_a.step(b, lambda m, bb: CE(m(**bb)["logits"], bb["labels"]))
        opt_c.step(inputs, b["labels"], CE)
        assert not bool(stats.skipped) and opt_a.last_weights is not None and opt_c.last_weights is not None
        torch.testing.assert_close(opt_a.last_weights, opt_c.last_weights, atol=1e-12, rtol=0)
        assert float(opt_a.last_weights.max() - opt_a.last_weights.min()) > 1e-3
        assert_params_equal(a, c, atol=1e-12)


# ----------------------------------------------------------------------------- clipping
def test_max_grad_norm_clips_the_descent_gradient_with_and_without_a_scaler() -> None:
    """SAM on least squares, by hand: g' = ∇f(w + ρ g/‖g‖), then w − lr · g' · min(1, c/‖g'‖)."""
    model, x, y = regression()
    model = model.float()
    x, y = x.float(), y.float()
    w = model.weight.detach().clone().squeeze(0)
    g = lsq_grad(w, x, y)
    descent = lsq_grad(w + 0.1 * g / g.norm(), x, y)
    clip = 0.25 * float(descent.norm())
    expected = w - 0.1 * descent * min(1.0, clip / (float(descent.norm()) + 1e-6))
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        m = copy.deepcopy(model)
        with torch.no_grad():
            m.weight.copy_(w.unsqueeze(0))
        opt = SAM(m, torch.optim.SGD(m.parameters(), lr=0.1), rho=0.1, max_grad_norm=clip, scaler=scaler)
        opt.step(x, y, lambda out, t: 0.5 * (out.squeeze(-1) - t) ** 2)
        torch.testing.assert_close(m.weight.squeeze(0), expected, atol=1e-6, rtol=0)


def test_max_grad_norm_clips_the_plain_step_with_and_without_a_scaler() -> None:
    """rho = 0, by hand: w − lr · g · min(1, c/‖g‖); the norm computed once is the one clipped with."""
    model, x, y = regression()
    model = model.float()
    x, y = x.float(), y.float()
    w = model.weight.detach().clone().squeeze(0)
    g = lsq_grad(w, x, y)
    clip = 0.25 * float(g.norm())
    expected = w - 0.1 * g * min(1.0, clip / (float(g.norm()) + 1e-6))
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        m = copy.deepcopy(model)
        with torch.no_grad():
            m.weight.copy_(w.unsqueeze(0))
        opt = SAM(m, torch.optim.SGD(m.parameters(), lr=0.1), rho=0.0, max_grad_norm=clip, scaler=scaler)
        stats = opt.step(x, y, lambda out, t: 0.5 * (out.squeeze(-1) - t) ** 2)
        torch.testing.assert_close(m.weight.squeeze(0), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(stats.grad_norm, g.norm(), atol=1e-5, rtol=1e-5)  # before clipping


# ----------------------------------------------------------------------------- state_dict
def test_state_dict_has_the_base_layout_plus_one_key_and_hooks_run() -> None:
    model = mlp()
    opt = RWSAM(model, torch.optim.Adam(model.parameters(), lr=1e-3), rho=0.1, lam=1.0, seed=2)
    opt.step(*batch(), CE)
    calls: list[str] = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("pre"))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "extra": 1})
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load-pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post"))
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups", "sam", "extra"} and calls == ["pre"]
    plain = torch.optim.Adam(model.parameters(), lr=1e-3)
    plain.load_state_dict(sd)  # torch reads it as an Adam checkpoint (unknown keys ignored)
    for p in model.parameters():
        assert torch.equal(plain.state[p]["exp_avg"], opt.state[p]["exp_avg"])
    opt.load_state_dict(sd)
    assert calls == ["pre", "load-pre", "load-post"]
