"""Bad input and faults (optimizers): every bad input gets an error that names the argument and
what was expected, raised before anything changes; every fault mid-step leaves weights, buffers, gradients,
optimizer state and random generators exactly as before."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM
from sam_tutorial.optim.base import PerturbedOptimizer
from tests.optim.helpers import CE, batch, mlp, sgd
from tests.optim.test_loops import FACTORIES, assert_unchanged, everything

X_ALL, Y_ALL = batch(seed=7, n=32)


def _setup(name: str = "sam", bn: bool = True) -> tuple[nn.Module, PerturbedOptimizer]:
    model = mlp(bn=bn)
    opt = FACTORIES[name](model, sgd(model))
    opt.step(*batch(seed=9), CE)  # warm: state, gradients and generators exist
    return model, opt


def _refused(model: nn.Module, opt: PerturbedOptimizer, call: Callable[[], object], error: type[Exception],
             match: str) -> None:
    before = everything(model, opt)
    with pytest.raises(error, match=match):
        call()
    assert_unchanged(before, everything(model, opt))


# ----------------------------------------------------------------------------- hand-written loops
def test_first_step_twice_is_refused_and_changes_nothing() -> None:
    model, opt = _setup()
    x, y = batch()
    CE(model(x), y).mean().backward()
    opt.first_step()
    _refused(model, opt, opt.first_step, RuntimeError, "first_step\\(\\) is pending")


def test_step_while_a_first_step_is_pending_is_refused() -> None:
    model, opt = _setup()
    x, y = batch()
    CE(model(x), y).mean().backward()
    opt.first_step()
    _refused(model, opt, lambda: opt.step(x, y, CE), RuntimeError, "call second_step\\(\\)")
    _refused(model, opt, lambda: opt.step(lambda: CE(model(x), y).mean()), RuntimeError, "pending")


def test_closure_that_never_calls_backward_is_refused() -> None:
    model, opt = _setup()
    x, y = batch()
    assert all(p.grad is not None for p in model.parameters())  # stale gradients from the warm-up
    _refused(model, opt, lambda: opt.step(lambda: CE(model(x), y).mean()), ValueError,
             "closure produced no gradient")


def test_first_step_without_gradients_is_refused() -> None:
    model = mlp()
    opt = SAM(model, sgd(model), rho=0.1)
    _refused(model, opt, opt.first_step, RuntimeError, "no parameter has a gradient")
    with pytest.raises(RuntimeError, match="second_step\\(\\) called without first_step"):
        opt.second_step()


# ----------------------------------------------------------------------------- hyper-parameters
@pytest.mark.parametrize(("factory", "message"), [
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, delta=math.inf), "delta must be a finite number > 0"),
    (lambda m, b: SAM(m, b, rho=0.5, adaptive=True, adaptive_eps=math.nan),
     "adaptive_eps must be a finite"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, mix="0.1"),
     "RWSAM: mix must be a number, got '0.1' of type str"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, seed="abc"),
     "RWSAM: seed must be an integer or None, got 'abc'"),
    # further bad inputs a hurried user types
    (lambda m, b: SAM(m, b, rho="0.05"), "SAM: rho must be a number, got '0.05' of type str"),
    (lambda m, b: SAM(m, b, rho=True), "SAM: rho must be a number, got True of type bool"),
    (lambda m, b: MSAM(m, b, rho=0.1, m=2.5), "MSAM: m must be an integer, got 2.5 of type float"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=math.inf), "lam must be a finite number >= 0"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, n_probes=np.int64(0)), "n_probes must be an integer >= 1"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, score="jvp"),
     "score must be one of finite-difference, exact"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, transform="sqrt"), "transform must be one of abs, square"),
    (lambda m, b: RWSAM(m, b, rho=0.1, lam=1.0, mix=1.5), "mix must be .* <= 1"),
    (lambda m, b: SAM(m, b, rho=0.1, max_grad_norm=0.0), "max_grad_norm must be a finite number > 0"),
    (lambda m, b: SAM(m, b, rho=0.1, max_grad_norm=math.nan), "max_grad_norm must be"),
    (lambda m, b: SAM(m, b, rho=0.1, scaler="yes"),
     "SAM: scaler must be a torch.amp.GradScaler or None, got 'yes'"),
    (lambda m, b: SAM(m, b, rho=0.1, scope="world"), "scope must be one of local, global"),
    (lambda m, b: MSAM(m, b, rho=0.1, m=4, micro_batches_per_call=0),
     "micro_batches_per_call must be an integer >= 1 or None"),
    (lambda m, b: NSAM(m, b, rho=0.1, data=(X_ALL, Y_ALL), chunk_size=-3), "chunk_size must be"),
    (lambda m, b: NSAM(m, b, rho=0.1, data=[]), "data must be a tensor, or a tuple/list/dict of tensors"),
    (lambda m, b: NSAM(m, b, rho=0.1, data={"x": X_ALL, "y": Y_ALL[:5]}),
     "data\\['y'\\] has 5 samples on dim 0 but data\\['x'\\] has 32"),
])
def test_bad_hyper_parameters_name_the_argument(factory, message: str) -> None:
    model = mlp()
    with pytest.raises(ValueError, match=message):
        factory(model, sgd(model))


def test_delta_below_float32_resolution_warns_once() -> None:
    model = mlp(dtype=torch.float32)
    opt = RWSAM(model, sgd(model), rho=0.1, lam=1.0, delta=1e-30, seed=0)
    x, y = batch(dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match="delta=1e-30 changes no per-sample loss"):
        opt.step(x, y, CE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(x, y, CE)  # once only (the check costs one host synchronisation)


# ----------------------------------------------------------------------------- the model and the loss fail
BAD_BATCHES = {
    "targets [B, 1]": lambda x, y: (x, y.unsqueeze(1), "CrossEntropyLoss takes class indices of shape"),
    "label >= classes": lambda x, y: (x, torch.full_like(y, 3), "out of bounds"),
    "float targets": lambda x, y: (x, y.double(), "targets: CrossEntropyLoss takes class indices"),
    "int32 targets": lambda x, y: (x, y.int(), "takes int64 class indices, got torch.int32"),
    "inputs of the wrong size": lambda x, y: (x[:, :4], y,
                                             "shapes cannot be multiplied|Expected size for first two"),
}


@pytest.mark.parametrize("name", ["sam", "n-sam", "m-sam-m4-loop", "m-sam-m4-vmap", "rw-sam", "rw-sam-exact",
                                  "sgd"])
@pytest.mark.parametrize("bad", list(BAD_BATCHES))
def test_exceptions_inside_the_model_or_the_loss_change_nothing(name: str, bad: str) -> None:
    model, opt = _setup(name)
    x, y, message = BAD_BATCHES[bad](*batch())
    _refused(model, opt, lambda: opt.step(x, y, CE), Exception, message)


def test_msam_with_m_1_on_a_batchnorm_model_changes_nothing() -> None:
    model, opt = _setup("sam")
    opt = MSAM(model, opt.base, rho=0.1, m=1, backend="loop")
    _refused(model, opt, lambda: opt.step(*batch(), CE), ValueError, "Expected more than 1 value per channel")


def test_nsam_data_with_a_bad_label_changes_nothing() -> None:
    model = mlp(bn=True)
    bad = Y_ALL.clone()
    bad[20] = 7
    opt = NSAM(model, sgd(model), rho=0.1, data=(X_ALL, bad), chunk_size=8)
    _refused(model, opt, lambda: opt.step(*batch(), CE), IndexError, "out of bounds")


def test_a_rejected_rwsam_step_does_not_advance_its_generator() -> None:
    model, opt = _setup("rw-sam")
    twin = copy.deepcopy((model, opt))
    x, y = batch()
    _refused(model, opt, lambda: opt.step(x, y, lambda out, t: CE(out, t)[:-1]), ValueError, "one loss per")
    opt.step(x, y, CE)
    twin[1].step(x, y, CE)
    assert torch.equal(opt.last_weights, twin[1].last_weights)


# ----------------------------------------------------------------------------- grad mode, graph, parameters
def test_step_inside_inference_mode_is_refused() -> None:
    model, opt = _setup()
    x, y = batch()
    with torch.inference_mode():
        _refused(model, opt, lambda: opt.step(x, y, CE), RuntimeError, "inside torch.inference_mode")


def test_a_detached_loss_is_refused() -> None:
    model, opt = _setup()
    _refused(model, opt, lambda: opt.step(*batch(), lambda out, t: CE(out, t).detach()), ValueError,
             "per-sample losses do not require grad")


def test_construction_refuses_what_cannot_train() -> None:
    model, other = mlp(), mlp(seed=1)
    with pytest.raises(ValueError, match="no parameter of the base optimizer requires grad"):
        SAM(model.requires_grad_(False), sgd(model), rho=0.1)
    model.requires_grad_(True)
    with pytest.raises(ValueError, match="parameter\\(s\\) that are not the model's"):
        SAM(model, sgd(other), rho=0.1)
    with pytest.raises(ValueError, match="LBFGS is not supported"):
        SAM(model, torch.optim.LBFGS(model.parameters()), rho=0.1)


def test_every_layer_frozen_after_construction_is_refused_at_the_step() -> None:
    model, opt = _setup()
    model.requires_grad_(False)
    _refused(model, opt, lambda: opt.step(*batch(), CE), ValueError, "no parameter of the base optimizer")


# ----------------------------------------------------------------------------- checkpoints
def test_sgd_checkpoint_into_adam_is_refused_before_anything_changes() -> None:
    model, opt = _setup()
    sd = opt.state_dict()
    adam_model = mlp(bn=True)
    adam = SAM(adam_model, torch.optim.Adam(adam_model.parameters(), lr=1e-3), rho=0.1)
    adam.step(*batch(), CE)
    groups = adam.param_groups
    _refused(adam_model, adam, lambda: adam.load_state_dict(sd), ValueError,
             "settings \\['dampening', 'momentum', 'nesterov'\\] that this Adam does not have")
    assert adam.param_groups is groups is adam.base.param_groups


def test_checkpoint_of_another_architecture_is_refused() -> None:
    a = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 6)).double()  # 28 + 30 parameters
    b = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 4)).double()  # 30 + 28: the same count
    opt_a = SAM(a, torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), rho=0.1)
    opt_a.step(torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 6, (8,)), CE)
    opt_b = SAM(b, torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), rho=0.1)
    with pytest.raises(ValueError, match="checkpoint is of another architecture"):
        opt_b.load_state_dict(opt_a.state_dict())
    assert not opt_b.state


def test_malformed_checkpoints_are_refused_by_name() -> None:
    model, opt = _setup("rw-sam")
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="state_dict must be a dict, got list"):
        opt.load_state_dict([1, 2])  # type: ignore[arg-type]
    _refused(model, opt, lambda: opt.load_state_dict({**sd, "sam": {"probe_rng": {"cpu": 3}}}), ValueError,
             "probe_rng'\\] must map device names to generator states")
    _refused(model, opt, lambda: opt.load_state_dict({**sd, "param_groups": []}), ValueError,
             "checkpoint has 0 parameter groups")


# ----------------------------------------------------------------------------- call forms
def test_wrong_call_forms_are_named() -> None:
    model, opt = _setup()
    x, y = batch()
    text = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "mask": torch.ones(5, 3)}
    for call, message in [
        (lambda: opt.step(x, y), "loss_fn is missing"),
        (lambda: opt.step(x, y, "ce"), "loss_fn must be callable, got str"),
        (lambda: opt.step({"x": x}, CE), "CrossEntropyLoss takes \\(outputs, targets\\)"),
        (lambda: opt.step([[1.0, 2.0]], y, CE), "inputs must be a tensor, or a tuple/list/dict"),
        (lambda: opt.step(text, lambda m, b: CE(m(b["mask"]), y)), "batch\\['mask'\\] has 5 samples"),
        (lambda: opt.step(x, y, CE, closure=lambda: CE(model(x), y).mean().backward()),
         "either a closure .* or the batch"),
    ]:
        _refused(model, opt, call, ValueError, message)


def test_nsam_data_that_is_not_a_pair_for_the_targets_form_is_refused() -> None:
    model = mlp()
    opt = NSAM(model, sgd(model), rho=0.1, data=X_ALL)
    _refused(model, opt, lambda: opt.step(*batch(), CE), ValueError, "data must be a pair \\(X, Y\\)")


def test_a_loss_that_is_a_python_float_is_refused() -> None:
    model, opt = _setup()
    def as_float(out: Tensor, t: Tensor) -> float:
        return float(CE(out, t).detach().mean())

    _refused(model, opt, lambda: opt.step(*batch(), as_float), ValueError,
             "one loss per sample, shape \\(16,\\), got float")


def test_nonfinite_inputs_skip_and_change_nothing() -> None:
    model, opt = _setup()
    x, y = batch()
    x[3, 0] = float("inf")
    before = everything(model, opt)
    assert bool(opt.step(x, y, CE).skipped)
    after = everything(model, opt)
    for key in ("params", "buffers", "state"):
        assert_unchanged(before[key], after[key])


def test_a_pickled_optimizer_keeps_working() -> None:
    import pickle

    model, opt = _setup("rw-sam")
    twin_model, twin = pickle.loads(pickle.dumps((model, opt)))
    x, y = batch()
    opt.step(x, y, CE)
    twin.step(x, y, CE)
    for p, q in zip(model.parameters(), twin_model.parameters()):
        assert torch.equal(p, q)

