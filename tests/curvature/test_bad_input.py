"""Bad input (curvature): m-sharpness over single samples of a BatchNorm model in training
mode, and targets/inputs the loss or the model cannot take, get the package's own ``ValueError``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sam_tutorial.curvature.hessian import hessian_matrix, top_eigenvalues
from sam_tutorial.curvature.hutchinson import hessian_trace
from sam_tutorial.curvature.sharpness import average_sharpness, m_sharpness, sam_sharpness

CE = nn.CrossEntropyLoss(reduction="none")
NET = nn.Linear(3, 2)
X, Y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])


def test_single_sample_sharpness_of_a_train_mode_batchnorm_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    buffers = [b.clone() for b in model.buffers()]
    with pytest.raises(ValueError, match="micro-batches of m=1 sample: the model's BatchNorm layer '1' is in "
                                         "training mode") as info:
        m_sharpness(model, CE, x, y, rho=0.05, m=1, eval_mode=False)
    assert "eval_mode=True" in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers())) and model.training
    assert m_sharpness(model, CE, x, y, rho=0.05, m=4, eval_mode=False).isfinite()  # batch statistics: fine


@pytest.mark.parametrize("call", [
    lambda x, y: hessian_matrix(NET, CE, x, y),
    lambda x, y: top_eigenvalues(NET, CE, x, y, k=1),
    lambda x, y: hessian_trace(NET, CE, x, y, n_probes=2),
    lambda x, y: m_sharpness(NET, CE, x, y, rho=0.1, m=2),
    lambda x, y: sam_sharpness(NET, CE, x, y, rho=0.1),
    lambda x, y: average_sharpness(NET, CE, x, y, sigma=0.1),
])
def test_float_targets_and_wrong_inputs_name_shapes_and_dtypes(call: object) -> None:
    before = NET.weight.clone()
    with pytest.raises(ValueError, match=r"loss_fn failed on outputs .* and targets torch.float32"):
        call(X, Y.float())  # type: ignore[operator]
    with pytest.raises(ValueError, match=r"model failed on inputs torch.float32 \[.*5\]"):
        call(torch.randn(4, 5), Y)  # type: ignore[operator]
    assert torch.equal(before, NET.weight)
