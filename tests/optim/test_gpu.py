"""CUDA-only properties: no host synchronisation in a step, float16 with GradScaler (``make gpu-check``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam_tutorial.optim import SAM
from tests.optim.test_contract import factories

pytestmark = pytest.mark.gpu

CE = nn.CrossEntropyLoss(reduction="none")


def _model(bn: bool = True) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(32, 64)]
    if bn:
        layers.append(nn.BatchNorm1d(64))
    layers += [nn.ReLU(), nn.Linear(64, 10)]
    return nn.Sequential(*layers).cuda()


def _batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(1)
    return (torch.randn(n, 32, device="cuda", generator=g),
            torch.randint(0, 10, (n,), device="cuda", generator=g))


FACTORIES = factories(rho=0.05, data=lambda: _batch(256), chunk_size=128)  # every registered variant


BASES = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),  # stateless: its skip must not fall back to the host
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),  # a step counter that torch keeps on the CPU
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3),
}


@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_step_makes_no_host_synchronisation(name: str, base: str) -> None:
    model = _model()
    opt = FACTORIES[name](model, BASES[base](model.parameters()))
    x, y = _batch()
    opt.step(x, y, CE)  # warm-up: the base optimizer creates its state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            stats = opt.step(x, y, CE)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not bool(stats.skipped)


def test_a_skip_with_adam_on_cuda_restores_its_step_counter() -> None:
    model = _model()
    opt = SAM(model, torch.optim.Adam(model.parameters(), lr=1e-3), rho=0.05)
    x, y = _batch()
    opt.step(x, y, CE)
    before = {k: v.clone() for k, v in next(iter(opt.base.state.values())).items()}
    assert bool(opt.step(x, y, lambda out, t: CE(out, t) * float("nan")).skipped)
    after = next(iter(opt.base.state.values()))
    assert all(torch.equal(before[k].to(after[k].device), after[k]) for k in before)


@pytest.mark.parametrize("name", ["sam", "m-sam-m4-loop", "m-sam-m4-vmap", "rw-sam"])
def test_float16_gradscaler_overflow_skips_the_whole_step(name: str) -> None:
    model = _model()
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**60)  # overflows float16 at once
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = FACTORIES[name](model, base)
    opt.scaler = scaler
    x, y = _batch()
    before = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    with torch.autocast("cuda", dtype=torch.float16):
        stats = opt.step(x, y, CE)
    assert bool(stats.skipped)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert scaler.get_scale() < 2.0**60
    for _ in range(60):  # the scale backs off until steps go through
        with torch.autocast("cuda", dtype=torch.float16):
            stats = opt.step(x, y, CE)
        if not bool(stats.skipped):
            break
    assert not bool(stats.skipped)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_float16_gradscaler_sam_matches_float32_sam_direction() -> None:
    """The normalised perturbation is scale-invariant: fp16+scaler SAM tracks fp32 SAM, ten times closer
    than SAM is to plain SGD after the same steps (so the test fails if the perturbation is lost)."""
    a, b, c = _model(bn=False), _model(bn=False), _model(bn=False)
    x, y = _batch()
    opt_a = SAM(a, torch.optim.SGD(a.parameters(), lr=0.05), rho=0.05,
                scaler=torch.amp.GradScaler("cuda", init_scale=2.0**10))
    opt_b = SAM(b, torch.optim.SGD(b.parameters(), lr=0.05), rho=0.05)
    opt_c = SAM(c, torch.optim.SGD(c.parameters(), lr=0.05), rho=0.0)
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.float16):
            opt_a.step(x, y, CE)
        opt_b.step(x, y, CE)
        opt_c.step(x, y, CE)

    def distance(m: nn.Module, n: nn.Module) -> float:
        diffs = [(p - q).detach().flatten() for p, q in zip(m.parameters(), n.parameters())]
        return float(torch.cat(diffs).norm())

    assert distance(a, b) < 0.1 * distance(b, c)
    for p, q in zip(a.parameters(), b.parameters()):  # the original element-wise bound, kept
        torch.testing.assert_close(p, q, atol=5e-3, rtol=0)


def test_a_gradscaler_step_makes_no_host_synchronisation_after_the_first() -> None:
    from sam_tutorial.engine.cost import count_ops

    model = _model()
    opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.05,
              scaler=torch.amp.GradScaler("cuda"))
    x, y = _batch()
    for _ in range(2):
        opt.step(x, y, CE)
    with torch.autocast("cuda", dtype=torch.float16):
        assert count_ops(lambda: opt.step(x, y, CE)).syncs == 0


def test_a_cuda_checkpoint_records_the_users_capturable_and_resumes_on_the_cpu() -> None:
    model = _model()
    opt = SAM(model, torch.optim.AdamW(model.parameters(), lr=1e-3), rho=0.05)
    x, y = _batch()
    opt.step(x, y, CE)
    assert opt.param_groups[0]["capturable"] is True  # the engine's switch, for a device-side skip
    sd = opt.state_dict()
    assert all(g["capturable"] is False for g in sd["param_groups"])
    cpu_model = _model().cpu()
    cpu_opt = SAM(cpu_model, torch.optim.AdamW(cpu_model.parameters(), lr=1e-3), rho=0.05)
    cpu_opt.load_state_dict({k: _to_cpu(v) for k, v in sd.items()})
    assert not bool(cpu_opt.step(x.cpu(), y.cpu(), CE).skipped)


def _to_cpu(x: object) -> object:
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _to_cpu(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_to_cpu(v) for v in x]
    return x


def test_auto_on_cuda_falls_back_to_the_loop_for_a_model_vmap_cannot_run() -> None:
    from torch.utils.checkpoint import checkpoint

    from sam_tutorial.optim import MSAM

    class Checkpointed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _model(bn=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net[2](checkpoint(lambda t: self.net[1](self.net[0](t)), x, use_reentrant=False))

    model = Checkpointed()
    opt = MSAM(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, m=16)
    x, y = _batch()
    with pytest.warns(RuntimeWarning, match="vmap cannot run this model"):
        assert not bool(opt.step(x, y, CE).skipped)
    assert opt.resolved_backend(x.device) == "loop"
