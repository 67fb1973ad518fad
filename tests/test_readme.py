"""The README's "use the optimizers in your own code" example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

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
