"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU, float64).

Every case trains a DDP model for a few steps on per-rank shards of the same global batches, and
rank 0 compares the weights with a single-process run on the concatenated batches. Results (max weight
difference, gradient all-reduces per step, skipped flags) go to the JSON file named by argv[1].
With ``--time`` it reports seconds per step of scope local vs global on a larger model instead.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from sam_tutorial.engine.distributed import destroy, init_from_env, shard
from sam_tutorial.optim import MSAM, NSAM, RWSAM, SAM

CE = nn.CrossEntropyLoss(reduction="none")
STEPS, B = 3, 16


def model_fn(bn: bool = False, width: int = 10) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(6, width)]
    if bn:
        layers.append(nn.BatchNorm1d(width))
    layers += [nn.Tanh(), nn.Linear(width, 3)]
    return nn.Sequential(*layers).double()


def batches(n: int = B) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g))
            for _ in range(STEPS)]


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)


def counting_hook(state, bucket):  # unannotated: DDP rejects string annotations
    """Counts each bucket all-reduce DDP performs, then performs it."""
    state["allreduce"] += 1
    return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]


def run_case(ctx, make: Callable, reference: Callable | None, bn: bool = False) -> dict[str, object]:
    model = DDP(model_fn(bn))
    state = {"allreduce": 0}
    model.register_comm_hook(state, counting_hook)
    opt = make(model, sgd(model))
    for x, y in batches():
        xs, ys = shard((x, y), ctx)
        opt.step(xs, ys, CE)
    out: dict[str, object] = {"allreduce_per_step": state["allreduce"] / STEPS}
    if reference is not None:
        ref = model_fn(bn)
        ref_opt = reference(ref, sgd(ref))
        for x, y in batches():
            ref_opt.step(x, y, CE)
        diff = max(float((p - q).abs().max()) for p, q in zip(model.module.parameters(), ref.parameters()))
        out["max_diff"] = diff
    # the ranks must hold identical weights after DDP steps
    flat = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, flat)
    out["ranks_agree"] = all(torch.equal(gathered[0], t) for t in gathered[1:])
    return out


def nonfinite_case(ctx) -> dict[str, object]:
    """Rank 1 sees a NaN loss in pass 1 (local scope): every rank must skip the step."""
    model = DDP(model_fn())
    opt = SAM(model, sgd(model), rho=0.1, scope="local")
    x, y = batches()[0]
    xs, ys = shard((x, y), ctx)
    opt.step(xs, ys, CE)  # warm-up: the base optimizer's state exists
    before = [p.detach().clone() for p in model.module.parameters()]
    calls = {"n": 0}

    def loss_fn(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        bad = ctx.rank == 1 and calls["n"] == 1
        return CE(out, t) * (float("nan") if bad else 1.0)

    stats = opt.step(xs, ys, loss_fn)
    unchanged = all(torch.equal(a, b) for a, b in zip(before, model.module.parameters()))
    return {"skipped": bool(stats.skipped), "unchanged": unchanged}


def batchnorm_case(ctx) -> dict[str, object]:
    """Each rank's running statistics equal one train-mode forward of its own shard at w."""
    model = DDP(model_fn(bn=True))
    opt = SAM(model, sgd(model), rho=0.1, scope="local")
    x, y = batches()[0]
    xs, ys = shard((x, y), ctx)
    reference = model_fn(bn=True)
    reference(xs)
    opt.step(xs, ys, CE)
    same = all(torch.equal(a, b) for a, b in zip(model.module.buffers(), reference.buffers()))
    return {"stats_from_first_pass": same}


def timing(ctx) -> dict[str, float]:
    torch.set_num_threads(1)
    out = {}
    for scope in ("local", "global"):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )
        model = DDP(net)
        opt = SAM(model, torch.optim.SGD(model.parameters(), lr=0.01), rho=0.05, scope=scope)
        x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
        for _ in range(3):
            opt.step(x, y, CE)
        dist.barrier()
        t = time.perf_counter()
        for _ in range(20):
            opt.step(x, y, CE)
        dist.barrier()
        out[scope] = (time.perf_counter() - t) / 20
    return out


def syncbn_case(ctx) -> dict[str, object]:
    """SyncBatchNorm (CUDA, NCCL): pass 1 runs under no_sync, yet normalises with global statistics,
    so every rank ends with the same running statistics; plain BatchNorm keeps per-rank ones."""
    out = {}
    for name in ("batchnorm", "syncbn"):
        net = model_fn(bn=True).float()
        if name == "syncbn":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        model = DDP(net.to(ctx.device), device_ids=[ctx.device.index])
        opt = SAM(model, sgd(model), rho=0.1, scope="local")
        for x, y in batches():
            xs, ys = shard((x.float().to(ctx.device), y.to(ctx.device)), ctx)
            opt.step(xs, ys, CE)
        stats = torch.cat([b.float().flatten() for b in model.module.buffers()])
        gathered = [torch.empty_like(stats) for _ in range(ctx.world_size)]
        dist.all_gather(gathered, stats)
        out[name] = all(torch.equal(gathered[0], t) for t in gathered[1:])
    return out


def main() -> None:
    if "--syncbn" in sys.argv:  # needs one CUDA device per rank
        ctx = init_from_env(backend="nccl", device="cuda")
        everything = [None] * ctx.world_size
        dist.all_gather_object(everything, {"buffers_agree_across_ranks": syncbn_case(ctx)})
        if ctx.is_main:
            with open(sys.argv[1], "w") as fh:
                json.dump(everything, fh, indent=1)
        destroy()
        return
    ctx = init_from_env(backend="gloo", device="cpu")
    b = B // ctx.world_size
    x_all, y_all = batches(64)[0]
    if "--time" in sys.argv:
        results: dict[str, object] = {"seconds_per_step": timing(ctx)}
    else:
        results = {
            "sam_local_is_msam": run_case(
                ctx, lambda m, o: SAM(m, o, rho=0.1, scope="local"), lambda m, o: MSAM(m, o, rho=0.1, m=b)),
            "usam_local_is_musam": run_case(
                ctx, lambda m, o: SAM(m, o, rho=0.1, normalize=False),
                lambda m, o: MSAM(m, o, rho=0.1, m=b, normalize=False)),
            "sam_global_is_sam": run_case(
                ctx, lambda m, o: SAM(m, o, rho=0.1, scope="global"), lambda m, o: SAM(m, o, rho=0.1)),
            "msam_local_is_msam": run_case(
                ctx, lambda m, o: MSAM(m, o, rho=0.1, m=b // 2), lambda m, o: MSAM(m, o, rho=0.1, m=b // 2)),
            "rwsam_global_is_rwsam": run_case(
                ctx, lambda m, o: RWSAM(m, o, rho=0.1, lam=3.0, delta=1e-3, seed=7, scope="global"),
                lambda m, o: RWSAM(m, o, rho=0.1, lam=3.0, delta=1e-3, seed=7)),
            "rwsam_local": run_case(
                ctx, lambda m, o: RWSAM(m, o, rho=0.1, lam=3.0, delta=1e-3, seed=7), None),
            "nsam_global_is_nsam": run_case(
                ctx, lambda m, o: NSAM(m, o, rho=0.1, data=shard((x_all, y_all), ctx), chunk_size=8,
                                       scope="global"),
                lambda m, o: NSAM(m, o, rho=0.1, data=(x_all, y_all))),
            "sgd": run_case(ctx, lambda m, o: SAM(m, o, rho=0.0), lambda m, o: SAM(m, o, rho=0.0)),
            "nonfinite_on_one_rank": nonfinite_case(ctx),
            "batchnorm": batchnorm_case(ctx),
        }
    everything = [None] * ctx.world_size
    dist.all_gather_object(everything, results)
    if ctx.is_main:
        with open(sys.argv[1], "w") as fh:
            json.dump(everything, fh, indent=1)
    destroy()


if __name__ == "__main__":
    main()
