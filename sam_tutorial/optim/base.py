"""The engine shared by every optimizer of the SAM family.

One step of any variant is the same sequence, only the gradient that builds the perturbation differs:

.. code-block:: text

    pass 1   forward + backward at w          -> g  (the ascent gradient; variant-specific)
    perturb  w <- w + e,  e = rho * g / ||g||  (SAM)   or   e = rho * g   (USAM, normalize=False)
    pass 2   forward + backward at w + e      -> g' (the descent gradient)
    restore  w <- w (exact copy), model buffers <- their values after pass 1
    step     base optimizer step with g' at w (skipped, bit-exactly, if anything was non-finite)

``rho = 0`` is one plain pass and a base step, so SGD runs through the same code as every variant it
is compared with.

Engineering choices (each avoids a pitfall of other SAM implementations):

* the base optimizer is any :class:`torch.optim.Optimizer` *instance*; ``param_groups`` and ``state``
  are the base optimizer's own objects, so LR schedulers attach to either; ``state_dict()`` is the base
  optimizer's (``state`` and ``param_groups`` at the top level) plus one key, ``"sam"``;
* weights are backed up into preallocated buffers and restored with ``copy_`` (bit-exact), never by
  subtracting e and never by rebinding ``p.data``;
* multi-tensor ``torch._foreach_*`` kernels per (device, dtype) group; norms accumulated in float32;
  scalars such as ``rho / ||g||`` stay 0-d device tensors: no ``.item()``, no host synchronisation
  (one host decision on the very first base step, while the base optimizer has no state yet);
* BatchNorm running statistics (any module buffer) are updated by the first pass at w only;
* a non-finite loss or gradient skips the whole step on the device: parameters, optimizer state and
  model buffers are selected back bit for bit (integer foreach kernels). On CUDA, a base optimizer with
  a ``capturable`` option (Adam, AdamW, ...) is switched to ``capturable=True`` so that its step
  counter lives on the device and a skip needs no host synchronisation;
* an exception anywhere inside ``step`` (a bad batch, out of memory, an interrupt) leaves weights,
  buffers, gradients, optimizer state and random generators exactly as before the call;
* float16 with :class:`torch.amp.GradScaler`: pass ``scaler=`` (a disabled scaler is ignored); both
  backward passes are scaled, an overflow in either pass skips the whole step and lowers the scale;
* ``max_grad_norm`` clips the descent gradient (after unscaling) right before the base step; any other
  processing can go in ``opt.base.register_step_pre_hook(fn)``, which runs at the same point.

DistributedDataParallel (pass the DDP-wrapped model): ``scope`` says where the perturbation comes from.

* ``scope="local"`` (default): pass 1, forward *and* backward, runs under ``model.no_sync()``, so each
  rank perturbs with its own gradient; DDP's bucketed all-reduce runs once, in pass 2. The step is
  m-SAM with m = the per-rank batch (Foret et al.'s multi-accelerator SAM), one all-reduce per step.
* ``scope="global"``: pass 1 is synchronised too, so the perturbation uses the all-reduced gradient:
  SAM on the global batch, two all-reduces per step.
* A rank whose pass 1 is non-finite makes its descent loss NaN; the all-reduce carries it to every rank
  and all ranks skip the step together, with no extra collective.
* BatchNorm: with DDP's default ``broadcast_buffers=True`` every forward starts from rank 0's buffers,
  and each rank keeps the statistics of its own first pass. ``SyncBatchNorm`` (CUDA only) normalises
  with global statistics in every pass, also under ``no_sync``.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from sam_tutorial.optim._checks import (
    check_arguments,
    check_grad_mode,
    check_model_and_base,
    task,
    typed_init,
)
from sam_tutorial.optim._engine import Engine
from sam_tutorial.optim._integration import _HOOK_DICTS, Integration, _check_group_rho, _Shared
from sam_tutorial.optim._skip import reset_scaler
from sam_tutorial.optim._state import check_base_state, check_group_values, without_cuda_capturable
from sam_tutorial.optim._util import (
    Group,
    PerSampleLoss,
    RNGState,
    batch_device,
    check_real,
    check_rho,
    count_samples,
)

__all__ = ["EXTRA_KEY", "SCOPES", "PerturbedOptimizer", "StepStats"]

SCOPES = ("local", "global")
"""Perturbation scopes under DistributedDataParallel."""

EXTRA_KEY = "sam"
"""The one key ``state_dict()`` adds to the base optimizer's: the family's own state (RNG states)."""


class StepStats(NamedTuple):
    """What one step measured; every field is a tensor on the model's device (no host sync).

    Book: chapter 1, "SGD, SAM and USAM from the same start".

    Attributes:
        loss: mean loss over the batch at w (n-SAM: over ``data``).
        loss_perturbed: mean loss at the perturbed point(s) w + e (equals ``loss`` when rho = 0).
        grad_norm: ||g|| of the gradient that built the perturbation (m-SAM: mean over micro-batches).
        perturbation_norm: ||e|| (m-SAM: mean over micro-batches); 0 when rho = 0.
        skipped: True if the step was skipped because a loss or gradient was non-finite.
        weights: the weights ``[B]`` (on the simplex) with which the batch's samples built the
            perturbation, where a variant weights them unevenly (RW-SAM's Gibbs weights p, paper §5.2;
            the effective batch is ``1 / weights.square().sum()``); ``None`` for the variants that
            weight every sample alike (SGD, SAM, n-SAM, m-SAM).
    """

    loss: Tensor
    loss_perturbed: Tensor
    grad_norm: Tensor
    perturbation_norm: Tensor
    skipped: Tensor
    weights: Tensor | None = None


class PerturbedOptimizer(Engine, Integration, torch.optim.Optimizer):
    """Base class of SAM, NSAM, MSAM and RWSAM: owns the passes, the buffers and the base step.

    Book: chapter 1, "The sharpness-aware objective"; paper: Eq. (2).

    Public surface: ``step``, ``zero_grad``, ``state_dict``, ``load_state_dict``, ``add_param_group``,
    ``param_groups`` and ``state`` (the base optimizer's objects).

    ``step`` takes the batch in one of two forms:

    * ``step(inputs, targets, loss_fn)``: ``loss_fn(model(inputs), targets)`` returns one loss per
      sample; ``inputs`` is a tensor (``model(x)``), a tuple (``model(*inputs)``) or a dict
      (``model(**inputs)``); an output that is a dict or has ``.logits`` (Hugging Face) is replaced by
      its logits;
    * ``step(batch, loss_fn)``: ``loss_fn(model, batch)`` runs the forward itself and returns one loss
      per sample (models that need the targets, token losses reduced per sample, sample weights).

    Any batch is a tensor or a nesting of tuples, lists and dicts whose tensors have the samples on dim 0
    (m-SAM and n-SAM split it there).

    Subclass protocol (the only methods a variant writes; everything else is the engine's):

    * ``_perturbed_step(batch, batch_size) -> StepStats``: one step with ``rho > 0`` on a batch of
      ``batch_size`` samples. When it is called, the weights are backed up (``_restore_weights`` puts w
      back), the buffers as they were before the step are saved, gradients are as the user left them,
      and any exception raised puts everything back. Use ``_losses(batch, batch_size)`` for per-sample
      losses, ``_backward``, ``_save_buffers`` (after pass 1), ``_ascend`` (or ``_grad_norm``,
      ``_perturbation_scale``, ``_perturb``) and finish with ``_restore_and_step(finite)``, which returns
      ``skipped``. Under DDP wrap pass 1 in ``_ascent_context()`` and the descent loss in
      ``_nan_unless(loss, finite)``.
    * ``_check_batch(batch_size)``: reject a batch size the variant cannot use (before anything changes).
    * ``_closure_step(closure)``: the torch closure contract (only SAM implements it).
    * ``_extra_state()`` / ``_check_extra_state(state)`` / ``_load_extra_state(state)``: the variant's
      own state (saved under ``state_dict()["sam"]``, and restored after an exception in ``step``).

    Args:
        model: the module whose forward computes the outputs (its buffers are restored after extra
            passes).
        base: any optimizer over (some of) ``model``'s parameters; it takes the step.
        rho: perturbation radius (``rho = 0``: the base optimizer alone, one pass).
        normalize: ``True`` for SAM's e = rho g/||g||, ``False`` for USAM's e = rho g.
        scaler: optional :class:`torch.amp.GradScaler` for float16 training (ignored when disabled).
        skip_nonfinite: skip the whole step when a loss or gradient is non-finite (default). With
            ``False`` the base optimizer steps on whatever the gradients hold (a little faster).
        scope: for a ``DistributedDataParallel`` model, where the perturbation comes from:
            ``"local"`` (default) or ``"global"`` (see the module docstring). Ignored otherwise.
        max_grad_norm: clip the descent gradient to this global norm (after unscaling) before the
            base step; ``None`` (default): no clipping.

    Every constructor of the family (and of a subclass) checks the type of each keyword argument
    against its annotation before anything else (``normalize="False"`` is refused, not read as true);
    :meth:`check_options` runs the same check on a dict of options without building anything.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = typed_init(cls.__dict__["__init__"])  # type: ignore[method-assign]

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse an option that is not a keyword argument of this class or whose value has another
        type than its annotation (e.g. ``{"normalize": "False"}``), naming it; builds nothing."""
        check_arguments(cls.__name__, inspect.unwrap(cls.__init__), options)

    @typed_init
    def __init__(
        self,
        model: nn.Module,
        base: torch.optim.Optimizer,
        *,
        rho: float,
        normalize: bool = True,
        scaler: torch.amp.GradScaler | None = None,
        skip_nonfinite: bool = True,
        scope: str | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        check_model_and_base(model, base)
        if scope is not None and scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)} (or None); got {scope!r}")
        rho = check_rho(rho)
        if max_grad_norm is not None:
            max_grad_norm = check_real("max_grad_norm", max_grad_norm, strict=True)
        _check_group_rho(base.param_groups)
        # Not torch.optim.Optimizer.__init__: param_groups, state and defaults are the base optimizer's
        # own objects (properties below), so schedulers, hooks and users always see one set of groups,
        # also after opt.base.load_state_dict(...).
        self.base = base
        for hooks in _HOOK_DICTS:
            setattr(self, hooks, OrderedDict())
        self._patch_step_function()
        self._warned_capturable_if_run_uncaptured = True
        self.model = model
        self.rho = rho
        self.normalize = bool(normalize)
        self.scaler = scaler
        self.skip_nonfinite = bool(skip_nonfinite)
        self.max_grad_norm = max_grad_norm
        self.ddp = isinstance(model, DistributedDataParallel)
        self.scope = (scope or "local") if self.ddp else None
        self._groups: list[Group] = []
        self._groups_key: tuple[Any, ...] = ()
        self._buffers: list[Tensor] = []
        self._buf_after_pass1: list[Tensor] = []
        self._buf_before_step: list[Tensor] = []
        self._state_backup: list[Tensor] = []
        self._stateless_ids: set[int] = set()  # parameters the base optimizer stepped without creating state
        self._per_sample: PerSampleLoss | None = None
        self._scale: Tensor | None = None  # the GradScaler's scale for this step (a device tensor)
        self._base_done = False
        self._host_skip = False  # the base keeps state a device-side skip cannot restore (see _engine)
        self._capturable_groups: set[int] = set()  # ids of groups switched to capturable=True on CUDA
        self._rng_at_start: RNGState | None = None
        # Shared by reference with any copy of __dict__ (Lightning's LightningOptimizer makes one).
        self._shared = _Shared()

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        return self._scaler

    @scaler.setter
    def scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        if scaler is not None and not isinstance(scaler, torch.amp.GradScaler):
            raise ValueError(f"scaler must be a torch.amp.GradScaler or None, got {scaler!r}")
        # GradScaler(enabled=use_amp) is the common idiom: a disabled scaler is no scaler.
        self._scaler = scaler if scaler is not None and scaler.is_enabled() else None

    # ----------------------------------------------------------------- public API
    def step(  # type: ignore[override]
        self,
        inputs: Any = None,
        targets: Any = None,
        loss_fn: Callable[..., Tensor] | None = None,
        *,
        closure: Callable[[], Tensor] | None = None,
    ) -> Any:
        """Run every pass of one step and the base optimizer's step.

        Args:
            inputs: the model's inputs (tensor, tuple or dict; samples on dim 0), or the whole batch
                when ``loss_fn`` takes ``(model, batch)``.
            targets: the targets, samples on dim 0; omit them when ``loss_fn`` takes ``(model, batch)``.
            loss_fn: ``loss_fn(outputs, targets)`` or ``loss_fn(model, batch)``, returning one loss per
                sample, shape ``[B]``.
            closure: the torch closure contract (SAM only): ``step(closure)`` or ``step(closure=fn)``.

        Returns:
            A :class:`StepStats` of device tensors (the closure form returns the closure's loss).

        Raises:
            ValueError: on an empty batch, targets of another length, or a loss of the wrong shape;
                nothing (weights, buffers, gradients, optimizer state, generators) is changed then.
        """
        if closure is None and callable(inputs) and targets is None and loss_fn is None and not isinstance(
            inputs, nn.Module
        ):
            closure, inputs = inputs, None
        if inputs is None and targets is None and loss_fn is None:
            if closure is None:
                return self._no_batch_step()
            self._check_not_pending()
            check_group_values(self.param_groups)
            return self._closure_step(closure)
        if closure is not None:
            self._run_side_closure(closure)
        batch, per_sample = task(
            type(self).__name__, type(self)._closure_step is not PerturbedOptimizer._closure_step,
            inputs, targets, loss_fn,
        )
        batch_size = count_samples(batch)
        self._check_not_pending()
        self._check_batch(batch_size)
        check_grad_mode()
        check_group_values(self.param_groups)
        self._per_sample = per_sample
        with torch.enable_grad(), self._transaction(batch_device(batch)):
            if self.rho == 0.0:
                return self._plain_step(batch, batch_size)
            return self._perturbed_step(batch, batch_size)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)
        self._remember_grads()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the base optimizer (the wrapper shares its ``param_groups``)."""
        _check_group_rho([param_group])
        self.base.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's ``state_dict()`` plus ``"sam"``: the family's own state (RNG states).

        Hooks registered with ``register_state_dict_pre_hook`` / ``_post_hook`` on this object run.
        """
        for pre in self._optimizer_state_dict_pre_hooks.values():
            pre(self)
        state = self.base.state_dict()
        for g, saved in zip(self.base.param_groups, state["param_groups"]):
            if id(g) in self._capturable_groups:  # the user's setting, not the engine's CUDA switch
                saved["capturable"] = False
        state[EXTRA_KEY] = self._extra_state()
        for post in self._optimizer_state_dict_post_hooks.values():
            out = post(self, state)
            state = out if out is not None else state
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a dict from ``state_dict`` (this layout or the older ``{"base", "sam"}``), or a plain
        base-optimizer state dict. Checked first: a checkpoint of another kind of base optimizer or of
        another architecture is refused before anything changes."""
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        sd: dict[str, Any] = dict(state_dict)
        for pre in self._optimizer_load_state_dict_pre_hooks.values():
            out = pre(self, sd)
            sd = out if out is not None else sd
        if "base" in sd and EXTRA_KEY in sd and "state" not in sd:  # layout of earlier versions
            base_sd, extra = sd["base"], sd[EXTRA_KEY]
        elif "state" in sd and "param_groups" in sd:
            base_sd = {k: v for k, v in sd.items() if k != EXTRA_KEY}
            extra = sd.get(EXTRA_KEY, {})
        else:
            raise ValueError(
                "state_dict must come from a SAM-family or torch optimizer's state_dict() (keys 'state', "
                f"'param_groups'); got keys {sorted(sd)}"
            )
        check_base_state(self.base, base_sd)
        self._check_extra_state(extra)
        self.base.load_state_dict(without_cuda_capturable(self.base, base_sd))
        self._load_extra_state(extra)
        self._groups_key = ()  # the groups are new objects: rebuilt (and made capturable) at the next step
        self._capturable_groups = set()
        self._state_backup = []
        self._stateless_ids = set()
        for post in self._optimizer_load_state_dict_post_hooks.values():
            post(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rho={self.rho}, normalize={self.normalize}, base={self.base!r})"

    # ------------------------------------------------------ for subclasses to override
    def _check_batch(self, batch_size: int) -> None:
        """Reject a batch size the variant cannot use."""

    def _perturbed_step(self, batch: Any, batch_size: int) -> StepStats:
        raise NotImplementedError

    def _closure_step(self, closure: Callable[[], Tensor]) -> Tensor:
        raise ValueError(
            f"{type(self).__name__} needs the batch: call step(inputs, targets, loss_fn) or "
            "step(batch, loss_fn); only SAM accepts a closure"
        )

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _check_extra_state(self, state: Any) -> None:
        if not isinstance(state, Mapping):
            raise ValueError(f"state_dict['{EXTRA_KEY}'] must be a dict, got {type(state).__name__}")

    def _load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass

    # ----------------------------------------------------------------- checks
    def _check_not_pending(self) -> None:
        if getattr(self, "_pending", None) is not None:
            raise RuntimeError(
                "first_step() is pending (the weights are at w + e): call second_step() before another "
                "first_step() or step()"
            )

    # ----------------------------------------------------------------- the step's frame
    @contextmanager
    def _transaction(self, device: torch.device) -> Iterator[None]:
        """Back up everything a step may change; put it all back if anything raises."""
        groups = self._refresh_groups()
        params = [p for g in self.param_groups for p in g["params"]]
        grads = [p.grad for p in params]
        self._rng_at_start = RNGState({p.device for g in groups for p in g.params[:1]})
        extra = self._extra_state()
        self._scale = self._current_scale(device)
        self._save_weights()
        self._save_buffers(before_step=True)
        self._base_done = False
        try:
            yield
        except BaseException:
            reset_scaler(self._scaler, self.base)  # else the scaler refuses every later step
            if not self._base_done:
                self._restore_weights()
                self._restore_buffers(before_step=True)
                for p, g in zip(params, grads):
                    p.grad = g
                self._rng_at_start.restore()
                self._load_extra_state(extra)
            raise
        else:
            self._remember_grads()
        finally:
            self._rng_at_start = None  # hold nothing between steps
            self._per_sample = None
            self._shared.perturbed = False

    def _current_scale(self, device: torch.device) -> Tensor | None:
        if self.scaler is None:
            return None
        return self.scaler.scale(torch.ones((), device=device))  # public API; a device tensor

    def _plain_step(self, batch: Any, batch_size: int) -> StepStats:
        loss = self._losses(batch, batch_size).mean()
        self._clear_grads()  # only once the call is known to be valid: a rejected call changes nothing
        self._backward(loss)
        gnorm = self._unscaled(self._grad_norm())
        skipped = self._base_step(torch.isfinite(loss) & torch.isfinite(gnorm), gnorm)
        zero = torch.zeros((), device=gnorm.device)
        return StepStats(loss.detach(), loss.detach(), gnorm, zero, skipped)

    # ----------------------------------------------------------------- passes
    def _losses(self, batch: Any, batch_size: int) -> Tensor:
        """Per-sample losses of the model on ``batch``, checked to have shape ``[batch_size]``."""
        assert self._per_sample is not None
        losses = self._per_sample(self.model, batch)
        if not isinstance(losses, Tensor) or losses.shape != (batch_size,):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"loss_fn must return one loss per sample, shape ({batch_size},), got {shape}; use "
                "reduction='none'"
            )
        if torch.is_grad_enabled() and not losses.requires_grad:
            raise ValueError(
                "the per-sample losses do not require grad: loss_fn detached them (.detach(), .item(), "
                "torch.no_grad() inside) or the model uses none of the base optimizer's trainable parameters"
            )
        return losses

    def _backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _ascent_context(self) -> AbstractContextManager[Any]:
        """Wraps pass 1 (forward *and* backward): ``no_sync`` under DDP with ``scope="local"``."""
        return self._no_sync() if self.scope == "local" else nullcontext()

    def _no_sync(self) -> AbstractContextManager[Any]:
        """``model.no_sync()`` for a DDP model (no gradient all-reduce), a no-op otherwise."""
        return self.model.no_sync() if isinstance(self.model, DistributedDataParallel) else nullcontext()

    def _nan_unless(self, loss: Tensor, finite: Tensor) -> Tensor:
        """Under DDP, make the synchronised descent loss NaN where this rank's pass 1 was not finite:
        the all-reduce carries the NaN to every rank, so all ranks skip the step together."""
        if not self.ddp:
            return loss
        return loss * torch.where(finite, 1.0, float("nan")).to(loss.dtype)
