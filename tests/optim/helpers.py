"""Small models, data and independent reference computations for the optimizer tests."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

CE = nn.CrossEntropyLoss(reduction="none")


def half_squared(out: Tensor, y: Tensor) -> Tensor:
    """Per-sample 0.5 (out - y)^2 for a scalar-output model."""
    return 0.5 * (out.squeeze(-1) - y) ** 2


def mlp(seed: int = 0, bn: bool = False, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(5, 8)]
    if bn:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers).to(dtype)


def batch(seed: int = 1, n: int = 16, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def regression(seed: int = 2, n: int = 12, d: int = 4) -> tuple[nn.Linear, Tensor, Tensor]:
    """A linear model without bias and data, for closed-form gradients ∇f_S(w) = X_Sᵀ(X_S w − y_S)/|S|."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    return model, x, y


def lsq_grad(w: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """∇ of (1/n) Σ 0.5 (x_i·w − y_i)², differentiated by hand."""
    return x.T @ (x @ w - y) / x.shape[0]


def params_of(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_params_equal(a: nn.Module, b: nn.Module, atol: float = 0.0) -> None:
    for p, q in zip(a.parameters(), b.parameters()):
        if atol == 0.0:
            assert torch.equal(p, q), (p - q).abs().max()
        else:
            torch.testing.assert_close(p, q, atol=atol, rtol=0)


class PassCounter:
    """Counts forward passes of a module and backward passes through its output."""

    def __init__(self, module: nn.Module) -> None:
        self.forward = 0
        self.backward = 0
        module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: object, output: Tensor) -> None:
        self.forward += 1
        if output.requires_grad:
            output.register_hook(self._count_backward)

    def _count_backward(self, grad: Tensor) -> None:
        self.backward += 1


def sgd(model: nn.Module, lr: float = 0.1, momentum: float = 0.9, wd: float = 5e-4) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)


def run(opt_factory: Callable[[nn.Module], torch.optim.Optimizer], model: nn.Module,
        batches: list[tuple[Tensor, Tensor]], loss_fn: Callable[..., Tensor] = CE) -> nn.Module:
    opt = opt_factory(model)
    for x, y in batches:
        opt.step(x, y, loss_fn)
    return model
