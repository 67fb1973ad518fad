"""Checks of a checkpoint before :meth:`PerturbedOptimizer.load_state_dict` changes anything (private).

A load is all-or-nothing: everything that could make torch's ``load_state_dict`` (or a later step) fail
half-way is checked here first, and each refusal names the entry and what to do.

* Another kind of base optimizer: its groups lack settings this base has *and* carry settings it does
  not know (SGD's ``momentum`` in an Adam checkpoint). Keys a base or a scheduler adds to a group
  (``initial_lr``, a ``step`` counter kept in the group) are not a different kind.
* Another architecture: a state tensor with the parameter's number of dimensions whose shape is neither
  the parameter's nor a reduction of it (Adafactor's row/column statistics are reductions), or with the
  parameter's number of elements in another shape.
* Non-finite values: a NaN or infinite floating state tensor (a momentum buffer) or group setting
  (a learning rate) would turn the weights into NaN at the next step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__: list[str] = []  # private module


def check_base_state(base: torch.optim.Optimizer, sd: Mapping[str, Any]) -> None:
    """Refuse a base checkpoint of another kind of optimizer, another architecture, or non-finite.

    Raises:
        ValueError: naming the group, parameter or setting, before anything is loaded.
    """
    groups, state = sd.get("param_groups"), sd.get("state")
    if not isinstance(groups, list) or not isinstance(state, Mapping):
        raise ValueError("state_dict['param_groups'] must be a list and state_dict['state'] a dict")
    if len(groups) != len(base.param_groups):
        raise ValueError(
            f"the checkpoint has {len(groups)} parameter groups, this optimizer "
            f"{len(base.param_groups)}"
        )
    ids: dict[Any, Tensor] = {}
    for i, (saved, cur) in enumerate(zip(groups, base.param_groups)):
        if not isinstance(saved, Mapping) or len(saved.get("params", ())) != len(cur["params"]):
            raise ValueError(f"parameter group {i} of the checkpoint has another number of parameters")
        _check_group_kind(base, i, saved)
        for key, value in saved.items():
            if isinstance(value, float) and not math.isfinite(value) and key != "params":
                raise ValueError(
                    f"the checkpoint's param_groups[{i}][{key!r}] is {value}: a step would make the weights "
                    "non-finite; set a finite value in the checkpoint (or after loading) and save again"
                )
        ids.update(zip(saved["params"], cur["params"]))
    for pid, st in state.items():
        p = ids.get(pid)
        if p is None or not isinstance(st, Mapping):
            raise ValueError(f"the checkpoint has state for a parameter id {pid!r} it does not list")
        for key, v in st.items():
            if isinstance(v, Tensor):
                _check_state_tensor(pid, key, v, p)


def _check_group_kind(base: torch.optim.Optimizer, i: int, saved: Mapping[str, Any]) -> None:
    known = set(base.defaults) | set(base.param_groups[i])
    missing = sorted(set(base.defaults) - set(saved))
    unknown = sorted(set(saved) - known - {"params"})
    if missing and unknown:
        raise ValueError(
            f"parameter group {i} of the checkpoint has settings {unknown} that this "
            f"{type(base).__name__} does not have, and lacks its settings {missing}: it was saved by "
            "another kind of base optimizer; build the same kind of base optimizer as the checkpoint's"
        )


def _check_state_tensor(pid: Any, key: str, v: Tensor, p: Tensor) -> None:
    reduction = v.ndim == p.ndim and all(a in (b, 1) for a, b in zip(v.shape, p.shape))
    if v.ndim > 0 and v.shape != p.shape and (
        (v.ndim == p.ndim and not reduction) or v.numel() == p.numel()
    ):
        raise ValueError(
            f"state {key!r} of parameter {pid!r} has shape {tuple(v.shape)} but the parameter has "
            f"{tuple(p.shape)}: the checkpoint is of another architecture"
        )
    if (v.is_floating_point() or v.is_complex()) and v.numel() and not bool(torch.isfinite(v).all()):
        raise ValueError(
            f"state {key!r} of parameter {pid!r} holds NaN or infinite values: the next step would make "
            "the weights non-finite; resume from an earlier checkpoint, or drop the optimizer state "
            "(load only the model) and start the optimizer afresh"
        )


def without_cuda_capturable(base: torch.optim.Optimizer, sd: Mapping[str, Any]) -> dict[str, Any]:
    """``sd`` with ``capturable=False`` in every group whose parameters here are not on CUDA: a checkpoint
    written on a GPU by an earlier version (which saved the engine's ``capturable=True``) then resumes on
    a CPU, with its step counters on the CPU as torch keeps them. ``sd`` itself is not changed."""
    groups = []
    for saved, cur in zip(sd["param_groups"], base.param_groups):
        if saved.get("capturable") is True and not any(p.device.type == "cuda" for p in cur["params"]):
            saved = {**saved, "capturable": False}
        groups.append(saved)
    return {**sd, "param_groups": groups}


def check_group_values(param_groups: list[dict[str, Any]]) -> None:
    """Before a step (host-side, no kernels): a NaN setting, or an infinite learning rate, in a group.

    Raises:
        ValueError: naming the group and the setting; nothing has changed yet.
    """
    for i, g in enumerate(param_groups):
        for key, value in g.items():
            if isinstance(value, float) and (math.isnan(value) or (key == "lr" and math.isinf(value))):
                raise ValueError(
                    f"param_groups[{i}][{key!r}] is {value}: the step would make the weights NaN; set a "
                    "finite value (a scheduler, a checkpoint or the code that built the group put it there)"
                )


def generator_states(saved: Any, devices: list[torch.device]) -> dict[torch.device, Tensor]:
    """RW-SAM's saved probe generators (``{"cpu": state, "cuda:0": state}``), mapped onto the devices
    of this optimizer's parameters by device type (a state saved on ``cuda:1`` resumes on ``cuda:0``)
    and checked by loading each into a scratch generator: nothing is set if any is unusable.

    Raises:
        ValueError: a state of another device type than the parameters' (a checkpoint saved on a GPU
            loaded on a CPU-only machine), or a truncated or corrupted state.
    """
    if not isinstance(saved, Mapping) or not all(isinstance(v, Tensor) for v in saved.values()):
        raise ValueError("state_dict['sam']['probe_rng'] must map device names to generator states")
    out: dict[torch.device, Tensor] = {}
    for name, state in saved.items():
        try:
            kind = torch.device(name).type
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"state_dict['sam']['probe_rng'] has an entry for {name!r}, not a device") from e
        targets = [d for d in devices if d.type == kind]
        if not targets:
            raise ValueError(
                f"state_dict['sam']['probe_rng'] holds the probe generator of a {kind} device ({name!r}) "
                f"but this optimizer's parameters are on {sorted({str(d) for d in devices})}: a {kind} "
                "generator state cannot drive another device's generator. To resume here, delete it "
                "(del sd['sam']['probe_rng']) before load_state_dict: the probes then restart from the "
                "saved seed"
            )
        state = state.detach().to("cpu")
        for d in targets:
            try:
                torch.Generator(device=d).set_state(state)
            except (RuntimeError, TypeError, ValueError) as e:
                raise ValueError(
                    f"state_dict['sam']['probe_rng'][{name!r}] is not a valid {kind} generator state "
                    f"({e}); the checkpoint is truncated or corrupted: delete the entry to restart the "
                    "probes from the saved seed, or use another checkpoint"
                ) from e
            out[d] = state
    return out
