"""The optimizers inside real frameworks: PyTorch Lightning (automatic optimization with SAM, its
accumulation and mixed-precision settings; manual optimization counting steps) and Hugging Face
``transformers`` models built from a config (no download) in a plain training loop."""

from __future__ import annotations

import copy
import logging
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from sam_tutorial.optim import MSAM, RWSAM, SAM

L = pytest.importorskip("lightning")
transformers = pytest.importorskip("transformers")

for _name in ("lightning", "lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_name).setLevel(logging.ERROR)

CE = nn.CrossEntropyLoss(reduction="none")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _data(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g))


def _trainer(**options: Any) -> Any:
    return L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, accelerator="cpu", devices=1, **options)


class AutoSAM(L.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls: list[bool] = []

    def configure_optimizers(self) -> Any:
        return SAM(self.net, torch.optim.SGD(self.net.parameters(), lr=0.1), rho=0.05)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.calls.append(self.optimizers().perturbed)
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)


def _fit(module: Any, batch_size: int = 8, **options: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(**options).fit(module, DataLoader(_data(), batch_size=batch_size))


def _by_hand(steps: int, batch_size: int = 8, autocast: bool = False) -> nn.Module:
    net = _net()
    opt = SAM(net, torch.optim.SGD(net.parameters(), lr=0.1), rho=0.05)
    data = _data()
    for i in range(steps):
        x, y = data[i * batch_size : (i + 1) * batch_size]

        def closure(x: Tensor = x, y: Tensor = y) -> Tensor:
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return net


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_automatic_optimization_is_sam_on_each_batch(precision: str) -> None:
    """On the CPU Lightning's "16-mixed" has no GradScaler (it is bfloat16 there), so bf16-mixed is the
    mixed precision this test can run; the float16 GradScaler route is the next test."""
    module = AutoSAM(_net())
    _fit(module, max_steps=3, precision=precision)
    reference = _by_hand(3, autocast=precision == "bf16-mixed")
    for p, q in zip(module.net.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    assert module.calls == [False, True] * 3  # training_step can tell the pass at w + e


def test_lightning_accumulate_grad_batches_is_refused_with_what_to_do() -> None:
    module = AutoSAM(_net())
    with pytest.raises(ValueError, match="accumulate_grad_batches=1.*MSAM"):
        _fit(module, max_steps=2, accumulate_grad_batches=2)


def test_lightning_float16_with_its_grad_scaler_is_refused_with_what_to_do() -> None:
    """The plugin Lightning builds for precision="16-mixed" on CUDA, built by hand on the CPU."""
    from lightning.pytorch.plugins import MixedPrecision

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    with pytest.raises(ValueError, match="precision='16-mixed'.*'bf16-mixed'"):
        _fit(AutoSAM(_net()), max_steps=1, plugins=[plugin])


class Manual(L.LightningModule):
    def __init__(self, net: nn.Module, make: Any) -> None:
        super().__init__()
        self.net, self.make, self.automatic_optimization = net, make, False

    def configure_optimizers(self) -> Any:
        return self.make(self.net)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.optimizers().step(inputs=x, targets=y, loss_fn=CE)


def test_lightning_manual_optimization_counts_steps_and_equals_the_plain_loop() -> None:
    def make(net: nn.Module) -> MSAM:
        return MSAM(net, torch.optim.SGD(net.parameters(), lr=0.1), rho=0.05, m=4)

    module = Manual(_net(), make)
    trainer_steps = []
    _fit(module, max_steps=3, max_epochs=5)
    trainer_steps.append(module.trainer.global_step)
    net = _net()
    opt = make(net)
    data = _data()
    for i in range(3):
        opt.step(*data[i * 8 : (i + 1) * 8], CE)
    assert trainer_steps == [3]
    for p, q in zip(module.net.parameters(), net.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- transformers
def _bert() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return transformers.BertForSequenceClassification(config).double()


def _text_batch(n: int = 8) -> tuple[dict[str, Tensor], Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 50, (n, 6), generator=g)
    mask = torch.ones(n, 6, dtype=torch.long)
    mask[: n // 2, 4:] = 0  # padding
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(0, 3, (n,), generator=g)


def test_a_transformers_training_loop_runs_every_variant_and_m_sam_at_m_equal_b_is_sam() -> None:
    inputs, labels = _text_batch()
    finals = {}
    for name, make in {
        "sam": lambda m: SAM(m, torch.optim.AdamW(m.parameters(), lr=1e-3), rho=0.05),
        "m-sam-loop-m8": lambda m: MSAM(m, torch.optim.AdamW(m.parameters(), lr=1e-3), rho=0.05, m=8,
                                        backend="loop"),
        "rw-sam": lambda m: RWSAM(m, torch.optim.AdamW(m.parameters(), lr=1e-3), rho=0.05, lam=1.0, seed=0),
    }.items():
        model = _bert()
        opt = make(model)
        for _ in range(2):
            stats = opt.step(inputs, labels, CE)  # model(**inputs).logits
            assert not bool(stats.skipped)
        finals[name] = [p.detach().clone() for p in model.parameters()]
    for p, q in zip(finals["sam"], finals["m-sam-loop-m8"]):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)
    assert any(not torch.equal(p, q) for p, q in zip(finals["sam"], finals["rw-sam"]))


class AutoAsOnCuda(MSAM):
    """``backend="auto"`` as it resolves on CUDA (vmap until it fails), runnable on the CPU."""

    def resolved_backend(self, device: torch.device) -> str:
        return "vmap" if self.vmap_fallback_reason is None else "loop"


def test_a_transformers_model_falls_back_from_vmap_to_the_loop() -> None:
    inputs, labels = _text_batch()
    model, reference = _bert(), _bert()
    opt = AutoAsOnCuda(model, torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05, m=4)
    with pytest.warns(RuntimeWarning, match="vmap cannot run this model"):
        opt.step(inputs, labels, CE)
    MSAM(reference, torch.optim.SGD(reference.parameters(), lr=0.1), rho=0.05, m=4,
         backend="loop").step(copy.deepcopy(inputs), labels, CE)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)
    bert = _bert()
    forced = MSAM(bert, torch.optim.SGD(bert.parameters(), lr=0.1), rho=0.05, m=4, backend="vmap")
    with pytest.raises(RuntimeError, match="use backend='loop'"):
        forced.step(inputs, labels, CE)
