"""The README's "use the optimizers in your own code" examples run as written (the Hugging Face one on a
transformers model built from a config, the Lightning ones in a real Trainer)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from sam_tutorial import MSAM, RWSAM, SAM

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_optimizer_example_runs(tmp_path: Path, monkeypatch) -> None:
    text = README.read_text()
    section = text[text.index("## Use the optimizers in your own code") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the section has a python example"
    source = code.group(1).replace("/tmp/sam_checkpoint.pt", str(tmp_path / "ckpt.pt"))
    namespace: dict[str, object] = {}
    exec(compile(source, str(README), "exec"), namespace)
    stats = namespace["stats"]
    assert not bool(stats.skipped)  # type: ignore[attr-defined]
    assert (tmp_path / "ckpt.pt").exists()


def _blocks(heading: str) -> list[str]:
    """The python code blocks of the README section under ``heading`` (up to the next heading)."""
    text = README.read_text()
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    end = re.search(r"^#{2,3} ", rest, re.M)
    section = rest[: end.start()] if end else rest
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _run(source: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(source, str(README), "exec"), namespace)
    return namespace


def test_readme_hugging_face_example_runs_on_a_transformers_model() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    ids = torch.randint(1, 50, (16, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(16, 6, dtype=torch.long)
    mask[:8, 4:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids}
    before = [p.detach().clone() for p in model.parameters()]
    (source,) = _blocks("### Any batch, any model (Hugging Face style)")
    ns = _run(source, {"torch": torch, "MSAM": MSAM, "model": model, "batch": batch})
    assert not bool(ns["stats"].skipped) and bool(torch.isfinite(ns["stats"].loss))
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_readme_gradient_accumulation_equals_sam_on_the_whole_batch() -> None:
    def setup() -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,), generator=g)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    model, base = setup()
    (source,) = _blocks("### Gradient accumulation")
    _run(source, {"SAM": SAM, "model": model, "base": base, "loss_fn": loss_fn,
                  "chunks": [(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])]})
    reference, ref_base = setup()
    SAM(reference, ref_base, rho=0.05).step(x, y, loss_fn)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, atol=1e-14, rtol=0)


def test_readme_lightning_examples_train_and_count_steps() -> None:
    L = pytest.importorskip("lightning")
    from torch.utils.data import DataLoader, TensorDataset

    auto_source, manual_source = _blocks("### PyTorch Lightning")
    ns = _run(auto_source + manual_source, {"torch": torch, "SAM": SAM, "RWSAM": RWSAM})
    g = torch.Generator().manual_seed(3)
    data = TensorDataset(torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g))
    for cls in (ns["AutoSAM"], ns["Classifier"]):
        torch.manual_seed(0)
        module = cls(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)))
        before = [p.detach().clone() for p in module.parameters()]
        trainer = L.Trainer(max_steps=3, max_epochs=5, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module, DataLoader(data, batch_size=8))
        assert trainer.global_step == 3  # max_steps stops training after three optimizer steps
        assert "train_loss" in trainer.logged_metrics
        assert any(not torch.equal(p, q) for p, q in zip(module.parameters(), before))
