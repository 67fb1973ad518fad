"""sam_tutorial.engine.cost: pass counts against each algorithm's definition (paper §2, C10), buffer counts
against what each optimizer must keep, and step timing against a fake clock."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sam_tutorial.engine import cost
from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM

CE = nn.CrossEntropyLoss(reduction="none")
B = 12


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()


def _batch(n: int = B, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _sgd(model: nn.Module, momentum: float = 0.0) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)


DATA = _batch(40, seed=2)

# (factory, forward, backward, forward samples, backward samples, forwards without autograd)
CASES = {
    "plain sgd": (lambda m: cost.PlainStep(m, _sgd(m)), 1, 1, B, B, 0),
    "sgd (rho=0)": (lambda m: SAM(m, _sgd(m), rho=0.0), 1, 1, B, B, 0),
    "sam": (lambda m: SAM(m, _sgd(m), rho=0.1), 2, 2, 2 * B, 2 * B, 0),
    "usam": (lambda m: SAM(m, _sgd(m), rho=0.1, normalize=False), 2, 2, 2 * B, 2 * B, 0),
    "n-sam": (lambda m: NSAM(m, _sgd(m), rho=0.1, data=DATA, chunk_size=16),
              math.ceil(40 / 16) + 1, math.ceil(40 / 16) + 1, 40 + B, 40 + B, 0),
    "m-sam m=3": (lambda m: MSAM(m, _sgd(m), rho=0.1, m=3, backend="loop"), 8, 8, 2 * B, 2 * B, 0),
    "m-sam m=1": (lambda m: MSAM(m, _sgd(m), rho=0.1, m=1, backend="loop"), 24, 24, 2 * B, 2 * B, 0),
    "rw-sam": (lambda m: RWSAM(m, _sgd(m), rho=0.1, lam=1.0, delta=1e-4, seed=0), 3, 2, 3 * B, 2 * B, 1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pass_counts_match_the_algorithms(name: str) -> None:
    factory, *expected = CASES[name]
    model = _model()
    opt = factory(model)
    x, y = _batch()
    counts = cost.count_passes(model, lambda: opt.step(x, y, CE))
    assert tuple(counts) == tuple(expected)
    assert not model._forward_hooks  # the hook is gone afterwards


def test_buffer_counts() -> None:
    x, y = _batch()

    def held(make, momentum: float = 0.0) -> cost.BufferCount:
        model = _model()
        opt = make(model, _sgd(model, momentum))
        for _ in range(2):  # the skip guard allocates its copy once the base state exists
            opt.step(x, y, CE)
        return cost.count_buffers(getattr(opt, "base", opt) if isinstance(opt, cost.PlainStep) else opt,
                                  model)

    plain = held(lambda m, b: cost.PlainStep(m, b), momentum=0.9)
    assert plain == cost.BufferCount(0.0, 1.0, 0)  # plain SGD: the momentum buffer only
    # SAM must keep w while it visits w + e: one copy; the skip guard adds a copy of the base state
    assert held(lambda m, b: SAM(m, b, rho=0.1, skip_nonfinite=False)) == cost.BufferCount(1.0, 0.0, 0)
    assert held(lambda m, b: SAM(m, b, rho=0.1), momentum=0.9) == cost.BufferCount(2.0, 1.0, 0)
    # RW-SAM also keeps its probe z (one flat buffer) and B weights and B scores
    rw = held(lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, delta=1e-4, seed=0, skip_nonfinite=False))
    assert rw == cost.BufferCount(2.0, 0.0, 2 * B)
    # n-SAM holds (a reference to) its data set: counted as other numbers
    ns = held(lambda m, b: NSAM(m, b, rho=0.1, data=DATA, skip_nonfinite=False))
    assert ns == cost.BufferCount(1.0, 0.0, DATA[0].numel() + DATA[1].numel())


def test_held_tensors_counts_each_storage_once() -> None:
    flat = torch.zeros(10)

    class Holder:
        def __init__(self) -> None:
            self.views = [flat[:4], flat[4:]]
            self.flat = flat
            self.again = {"x": flat[2:3]}
            self.skip = torch.ones(3)

    found = cost.held_tensors(Holder(), exclude=[])
    assert sorted(t.numel() for t in found) == [3, 10]
    found = cost.held_tensors(Holder(), exclude=[Holder().skip, flat])
    assert [t.numel() for t in found] == [3]  # a fresh `skip` tensor: different storage


def test_step_times_use_interleaved_repeats() -> None:
    now, calls, threads = [0.0], [], set()
    before = torch.get_num_threads()

    class Fake:
        def __init__(self, name: str, seconds: float) -> None:
            self.name, self.seconds = name, seconds

        def step(self, *args: object) -> None:
            calls.append(self.name)
            threads.add(torch.get_num_threads())
            now[0] += self.seconds

    model, (x, y) = _model(), _batch()
    times = cost.step_times(
        {"a": lambda m: Fake("a", 0.5), "b": lambda m: Fake("b", 2.0)}, model, x, y, CE,
        steps=3, repeats=2, warmup=1, clock=lambda: now[0],
    )
    np.testing.assert_allclose(times["a"], [0.5, 0.5])
    np.testing.assert_allclose(times["b"], [2.0, 2.0])
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert threads == {1} and torch.get_num_threads() == before  # one thread while timing, then restored
    with pytest.raises(ValueError):
        cost.step_times({}, model, x, y, CE, steps=0)
