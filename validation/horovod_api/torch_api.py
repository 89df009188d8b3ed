"""Horovod's PyTorch API (horovod.torch), checked family by family on every rank against
references each rank computes from all ranks' data."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from validation.horovod_api.results import Checks
from validation.horovod_api.tensorflow_api import (
    adasum_pair,
    rank_data,
    timeline_events,
    timeline_shows_allreduce,
)


def check_collectives(hvd: Any, torch: Any, c: Checks) -> None:
    """allreduce (every op, compression, scaling, async, in place) and the sparse allreduce."""
    n, r = c.size, c.rank
    data = [rank_data(i, (3, 2)) for i in range(n)]
    stack = np.stack(data)
    x = torch.from_numpy(data[r])
    refs = {
        "Sum": stack.sum(0),
        "Average": stack.mean(0),
        "Min": stack.min(0),
        "Max": stack.max(0),
        "Product": stack.prod(0),
    }
    for op, want in refs.items():
        c.close(
            "collectives",
            f"allreduce(op={op})",
            hvd.allreduce(x, op=getattr(hvd, op), name=f"api_pt_{op}"),
            want,
        )
    if not hvd.mpi_enabled():
        c.unsupported(
            "collectives",
            "allreduce(op=Adasum) under Gloo",
            lambda: hvd.allreduce(x, op=hvd.Adasum),
            "horovod.torch.allreduce(op=hvd.Adasum)",
        )
    elif n == 2:
        c.close(
            "collectives",
            "allreduce(op=Adasum)",
            hvd.allreduce(x, op=hvd.Adasum).numpy().ravel(),
            adasum_pair(data),
            atol=1e-4,
        )
    got = hvd.allreduce(x, op=hvd.Average, compression=hvd.Compression.fp16)
    c.true(
        "collectives",
        "allreduce(compression=fp16) dtype",
        got.dtype == torch.float32,
        str(got.dtype),
    )
    c.close(
        "collectives", "allreduce(compression=fp16)", got, refs["Average"], atol=2e-2, rtol=1e-2
    )
    got = hvd.allreduce(x, op=hvd.Sum, prescale_factor=2.0, postscale_factor=0.25)
    c.close("collectives", "allreduce(prescale=2, postscale=0.25)", got, refs["Sum"] * 0.5)
    inplace = x.clone()
    hvd.allreduce_(inplace, op=hvd.Sum)
    c.close("collectives", "allreduce_(in place)", inplace, refs["Sum"])
    handle = hvd.allreduce_async(x, op=hvd.Max, name="api_pt_async")
    c.close("collectives", "allreduce_async + synchronize", hvd.synchronize(handle), refs["Max"])
    ints = torch.tensor([r + 1, 10 * (r + 1)], dtype=torch.int64)
    c.close(
        "collectives",
        "allreduce(int64, Sum)",
        hvd.allreduce(ints, op=hvd.Sum),
        [n * (n + 1) // 2, 5 * n * (n + 1)],
    )
    dense = np.zeros((n + 1, 2), np.float32)
    for i in range(n):
        dense[i] += data[i][0]
        dense[n] += data[i][1]
    sparse = torch.sparse_coo_tensor(
        torch.tensor([[r, n]]), torch.from_numpy(data[r][:2]), (n + 1, 2)
    )
    got = hvd.sparse_allreduce_async(
        sparse, name="api_pt_sparse", op=hvd.Average
    )()  # returns a callable
    c.close("collectives", "sparse_allreduce_async(Average)", got.to_dense(), dense / n)


def check_grouped(hvd: Any, torch: Any, c: Checks) -> None:
    """grouped_allreduce and its in-place form."""
    n, r = c.size, c.rank
    a = [rank_data(i, (4,), seed=1) for i in range(n)]
    b = [rank_data(i, (2, 3), seed=2) for i in range(n)]
    got = hvd.grouped_allreduce([torch.from_numpy(a[r]), torch.from_numpy(b[r])], op=hvd.Sum)
    c.close("grouped", "grouped_allreduce[0]", got[0], np.sum(a, 0))
    c.close("grouped", "grouped_allreduce[1]", got[1], np.sum(b, 0))
    tensors = [torch.from_numpy(a[r]).clone(), torch.from_numpy(b[r]).clone()]
    hvd.grouped_allreduce_(tensors, op=hvd.Average)
    c.close("grouped", "grouped_allreduce_(Average)[1]", tensors[1], np.mean(b, 0))


def check_allgather(hvd: Any, torch: Any, c: Checks) -> None:
    """allgather and grouped_allgather with a different first dimension on every rank."""
    n, r = c.size, c.rank
    parts = [rank_data(i, (i + 1, 2), seed=3) for i in range(n)]
    c.close(
        "allgather",
        "allgather(rows = rank+1)",
        hvd.allgather(torch.from_numpy(parts[r])),
        np.concatenate(parts),
    )
    ids = [np.arange(i + 2, dtype=np.int64) * (i + 1) for i in range(n)]
    got = hvd.grouped_allgather([torch.from_numpy(parts[r]), torch.from_numpy(ids[r])])
    c.close("allgather", "grouped_allgather[0]", got[0], np.concatenate(parts))
    c.close("allgather", "grouped_allgather[1] (int64)", got[1], np.concatenate(ids))


def check_broadcast(hvd: Any, torch: Any, c: Checks) -> None:
    """broadcast, broadcast_ (in place), broadcast_parameters and broadcast_optimizer_state."""
    n, r = c.size, c.rank
    root = n - 1
    got = hvd.broadcast(torch.from_numpy(rank_data(r, (3,))), root_rank=root)
    c.close("broadcast", f"broadcast(root_rank={root})", got, rank_data(root, (3,)))
    t = torch.from_numpy(rank_data(r, (2,), seed=6)).clone()
    hvd.broadcast_(t, root_rank=root)
    c.close("broadcast", "broadcast_(in place)", t, rank_data(root, (2,), seed=6))
    torch.manual_seed(100 + r)  # different initial weights and optimizer state on every rank
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1 * (r + 1), momentum=0.9)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    root_state = hvd.broadcast_object(
        (
            {k: v.clone() for k, v in model.state_dict().items()},
            [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()],
        ),
        root_rank=0,
    )
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(opt, root_rank=0)
    got = torch.cat([v.ravel() for v in model.state_dict().values()])
    c.close(
        "broadcast",
        "broadcast_parameters",
        got,
        torch.cat([v.ravel() for v in root_state[0].values()]),
    )
    got = torch.cat([opt.state[p]["momentum_buffer"].ravel() for p in model.parameters()])
    c.close(
        "broadcast",
        "broadcast_optimizer_state momentum",
        got,
        torch.cat([m.ravel() for m in root_state[1]]),
    )
    c.close("broadcast", "broadcast_optimizer_state lr", opt.param_groups[0]["lr"], 0.1)


def check_alltoall(hvd: Any, torch: Any, c: Checks) -> None:
    """alltoall with explicit splits (rank r sends j+1 rows to rank j) and equal splits."""
    n, r = c.size, c.rank
    rows = np.concatenate([np.full((j + 1, 2), 10 * r + j, np.float32) for j in range(n)])
    got, received = hvd.alltoall(
        torch.from_numpy(rows), splits=torch.arange(1, n + 1, dtype=torch.int32)
    )
    want = np.concatenate([np.full((r + 1, 2), 10 * i + r, np.float32) for i in range(n)])
    c.close("alltoall", "alltoall(splits)", got, want)
    c.close("alltoall", "alltoall received_splits", received, [r + 1] * n)
    even = torch.arange(2 * n, dtype=torch.float32) + 100 * r
    want = np.concatenate(
        [np.arange(2 * r, 2 * r + 2, dtype=np.float32) + 100 * i for i in range(n)]
    )
    c.close("alltoall", "alltoall(equal splits)", hvd.alltoall(even), want)


def check_reducescatter(hvd: Any, torch: Any, c: Checks) -> None:
    """reducescatter (Sum, Average) and grouped_reducescatter: rank r keeps rows 2r, 2r+1."""
    n, r = c.size, c.rank
    data = [rank_data(i, (2 * n, 3), seed=7) for i in range(n)]
    mine = slice(2 * r, 2 * r + 2)
    x = torch.from_numpy(data[r])
    c.close(
        "reducescatter",
        "reducescatter(Sum)",
        hvd.reducescatter(x, op=hvd.Sum),
        np.sum(data, 0)[mine],
    )
    c.close(
        "reducescatter",
        "reducescatter(Average)",
        hvd.reducescatter(x, op=hvd.Average),
        np.mean(data, 0)[mine],
    )
    got = hvd.grouped_reducescatter([x, 2 * x], op=hvd.Sum)
    c.close("reducescatter", "grouped_reducescatter[1]", got[1], 2 * np.sum(data, 0)[mine])


def check_objects(hvd: Any, torch: Any, c: Checks) -> None:
    """allgather_object and broadcast_object (pickled Python objects)."""
    n, r = c.size, c.rank
    got = hvd.allgather_object({"rank": r, "name": "x" * (r + 1)})
    c.true(
        "objects",
        "allgather_object",
        got == [{"rank": i, "name": "x" * (i + 1)} for i in range(n)],
        f"got={got}",
    )
    got = hvd.broadcast_object({"from": r, "payload": list(range(r + 3))}, root_rank=n - 1)
    c.true(
        "objects",
        "broadcast_object(root_rank=last)",
        got == {"from": n - 1, "payload": list(range(n + 2))},
        f"got={got}",
    )


def check_join(hvd: Any, torch: Any, c: Checks) -> None:
    """join(): the ranks that joined contribute zeros; it returns the last rank to join."""
    if c.rank == 0:
        time.sleep(0.5)
        got = hvd.allreduce(torch.tensor([5.0, 7.0]), op=hvd.Sum, name="api_pt_join_extra")
        c.close("join", "allreduce while others joined", got, [5.0, 7.0])
    last = hvd.join()
    c.true("join", "join() returns last joined rank", last == 0, f"got={last}")


def check_barrier(hvd: Any, torch: Any, c: Checks) -> None:
    """barrier(): no rank leaves before the last one arrived."""
    if c.rank == c.size - 1:
        time.sleep(1.0)
    arrived = time.time()
    hvd.barrier()
    times = hvd.allgather_object((arrived, time.time()))
    latest = max(a for a, _ in times)
    c.true(
        "barrier",
        "barrier() waits for the last rank",
        all(t >= latest for _, t in times),
        f"arrive/leave={times}",
    )


def _net(torch: Any) -> Any:
    torch.manual_seed(7)  # same initial weights on every rank
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))


def _local_grads(torch: Any, model: Any, rank: int, step: int) -> list[np.ndarray]:
    model.zero_grad()
    x, y = (
        torch.from_numpy(rank_data(rank, (8, 4), 80 + step)),
        torch.from_numpy(rank_data(rank, (8, 1), 90 + step)),
    )
    torch.nn.functional.mse_loss(model(x), y).backward()
    return [p.grad.detach().numpy().copy() for p in model.parameters()]


def check_optimizer(hvd: Any, torch: Any, c: Checks) -> None:
    """DistributedOptimizer (plain, backward_passes_per_step=2, op=Adasum under MPI) against
    SGD on gradients computed here for every rank."""
    n, r = c.size, c.rank
    lr = 0.1
    for passes in (1, 2):
        model = _net(torch)
        start = [p.detach().numpy().copy() for p in model.parameters()]
        refs = [[_local_grads(torch, model, i, s) for s in range(passes)] for i in range(n)]
        want = [
            w - lr * np.mean([sum(refs[i][s][k] for s in range(passes)) for i in range(n)], 0)
            for k, w in enumerate(start)
        ]
        with torch.no_grad():
            for p, w in zip(model.parameters(), start, strict=True):
                p.copy_(torch.from_numpy(w))
        opt = hvd.DistributedOptimizer(
            torch.optim.SGD(model.parameters(), lr=lr),
            named_parameters=model.named_parameters(),
            backward_passes_per_step=passes,
        )
        opt.zero_grad()
        for s in range(passes):
            x, y = (
                torch.from_numpy(rank_data(r, (8, 4), 80 + s)),
                torch.from_numpy(rank_data(r, (8, 1), 90 + s)),
            )
            torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        got = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
        c.close(
            "optimizer",
            f"DistributedOptimizer backward_passes_per_step={passes}",
            got,
            np.concatenate([w.ravel() for w in want]),
        )
    # Adasum optimizer: the step is the Adasum of the ranks' own updates.
    model = _net(torch)
    start = [p.detach().numpy().copy() for p in model.parameters()]
    refs = [_local_grads(torch, model, i, 0) for i in range(n)]
    with torch.no_grad():
        for p, w in zip(model.parameters(), start, strict=True):
            p.copy_(torch.from_numpy(w))
    make = lambda: hvd.DistributedOptimizer(  # noqa: E731
        torch.optim.SGD(model.parameters(), lr=lr),
        named_parameters=model.named_parameters(),
        op=hvd.Adasum,
    )
    if not hvd.mpi_enabled():

        def adasum_step() -> None:
            opt = make()
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(torch.ones(2, 4)), torch.zeros(2, 1)).backward()
            opt.step()

        c.unsupported(
            "optimizer",
            "DistributedOptimizer(op=Adasum) under Gloo",
            adasum_step,
            "horovod.torch.allreduce(op=hvd.Adasum)",
        )
    elif n == 2:
        opt = make()
        opt.zero_grad()
        x, y = (
            torch.from_numpy(rank_data(r, (8, 4), 80)),
            torch.from_numpy(rank_data(r, (8, 1), 90)),
        )
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        for k, p in enumerate(model.parameters()):
            want = start[k].ravel() + adasum_pair([-lr * refs[0][k], -lr * refs[1][k]])
            c.close(
                "optimizer",
                f"DistributedOptimizer(op=Adasum) param {k}",
                p.detach().numpy().ravel(),
                want,
                atol=1e-5,
            )


def check_sync_batch_norm(hvd: Any, torch: Any, c: Checks) -> None:
    """SyncBatchNorm: batch statistics and gradients are those of the global batch."""
    n, r = c.size, c.rank
    parts = [rank_data(i, (4 + i, 3), seed=60) for i in range(n)]  # unequal local batches
    weights = [rank_data(i, (4 + i, 3), seed=61) for i in range(n)]
    whole = np.concatenate(parts)
    bn = hvd.SyncBatchNorm(3, momentum=0.5, eps=1e-3)
    bn.train()
    x = torch.from_numpy(parts[r]).requires_grad_()
    out = bn(x)
    (out * torch.from_numpy(weights[r])).sum().backward()
    ref = torch.nn.BatchNorm1d(3, momentum=0.5, eps=1e-3)
    xs = torch.from_numpy(whole).requires_grad_()
    ref_out = ref(xs)
    (ref_out * torch.from_numpy(np.concatenate(weights))).sum().backward()
    mine = slice(sum(len(p) for p in parts[:r]), sum(len(p) for p in parts[: r + 1]))
    c.close(
        "sync_batch_norm",
        "output = global-batch normalised",
        out.detach(),
        ref_out.detach()[mine],
        atol=1e-4,
    )
    c.close("sync_batch_norm", "running_mean", bn.running_mean, ref.running_mean, atol=1e-5)
    c.close("sync_batch_norm", "running_var (unbiased)", bn.running_var, ref.running_var, atol=1e-4)
    c.close(
        "sync_batch_norm", "input gradient = global batch norm's", x.grad, xs.grad[mine], atol=1e-4
    )
    grads = hvd.allreduce(
        bn.weight.grad, op=hvd.Sum
    )  # each rank holds its share of the weight gradient
    c.close(
        "sync_batch_norm", "weight gradient (summed over ranks)", grads, ref.weight.grad, atol=1e-4
    )


def check_process_sets(hvd: Any, torch: Any, c: Checks, first: Any) -> None:
    """Collectives restricted to a process set: rank 0 alone (given to init), the others (added)."""
    n, r = c.size, c.rank
    rest_ranks = list(range(1, n))
    c.true(
        "process_sets",
        "static set included()/ranks",
        first.included() == (r == 0) and first.ranks == [0],
        f"included={first.included()} ranks={first.ranks}",
    )
    rest = hvd.add_process_set(rest_ranks)
    mine, members = (first, [0]) if r == 0 else (rest, rest_ranks)
    got = hvd.allreduce(torch.tensor([float(r + 1)]), op=hvd.Sum, process_set=mine)
    c.close("process_sets", "allreduce within my set", got, [sum(i + 1 for i in members)])
    c.close(
        "process_sets",
        "allgather within my set",
        hvd.allgather(torch.tensor([float(r)]), process_set=mine),
        [float(i) for i in members],
    )
    got = hvd.broadcast(torch.tensor([float(r)]), root_rank=members[-1], process_set=mine)
    c.close("process_sets", "broadcast within my set", got, [float(members[-1])])
    hvd.barrier(process_set=mine)
    c.true(
        "process_sets",
        "set size()/rank()",
        mine.size() == len(members) and mine.rank() == members.index(r),
        f"size={mine.size()} rank={mine.rank()}",
    )
    c.true(
        "process_sets", "remove_process_set", hvd.remove_process_set(rest), "dynamic set removed"
    )


def check_elastic(hvd: Any, torch: Any, c: Checks) -> None:
    """TorchState: sync copies rank 0's model, optimizer and attributes; restore rolls back."""
    r = c.rank
    torch.manual_seed(200 + r)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    state = hvd.elastic.TorchState(model, opt, epoch=r, batch=10 + r)
    state.sync()
    root = hvd.broadcast_object({k: v.clone() for k, v in model.state_dict().items()}, root_rank=0)
    got = torch.cat([v.ravel() for v in model.state_dict().values()])
    c.close(
        "elastic",
        "TorchState.sync model = rank 0's",
        got,
        torch.cat([v.ravel() for v in root.values()]),
    )
    c.true(
        "elastic",
        "TorchState.sync attributes",
        (state.epoch, state.batch) == (0, 10),
        f"epoch={state.epoch} batch={state.batch}",
    )
    state.epoch = 3
    state.commit()
    committed = torch.cat([v.ravel().clone() for v in model.state_dict().values()])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    state.epoch = 4
    state.restore()
    c.close(
        "elastic",
        "TorchState.restore model",
        torch.cat([v.ravel() for v in model.state_dict().values()]),
        committed,
    )
    c.true("elastic", "TorchState.restore attributes", state.epoch == 3, f"epoch={state.epoch}")
    sampler = hvd.elastic.ElasticSampler(list(range(10)), shuffle=False)
    seen = hvd.allgather_object(sorted(sampler))
    c.true(
        "elastic",
        "ElasticSampler shards the data set",
        sorted(i for part in seen for i in part) == list(range(10)),
        f"per rank={seen}",
    )


def check_timeline(hvd: Any, torch: Any, c: Checks) -> None:
    """start_timeline/stop_timeline: rank 0 writes a Chrome trace with the op's activities."""
    path = hvd.broadcast_object(
        os.path.join(tempfile.gettempdir(), f"hvd-api-timeline-{os.getpid()}.json"), 0
    )
    hvd.start_timeline(path, mark_cycles=True)
    hvd.allreduce(torch.tensor([1.0]), op=hvd.Sum, name="api_pt_timeline_probe")
    hvd.stop_timeline()
    if c.rank == 0:
        events = timeline_events(path)
        os.unlink(path)
        c.true(
            "timeline",
            "timeline has the allreduce",
            timeline_shows_allreduce(events, "api_pt_timeline_probe"),
            f"{len(events)} events",
        )
    else:
        c.true("timeline", "timeline started and stopped", True, "rank 0 writes the file")


def run(c_factory: Callable[[int, int], Checks], only: set[str]) -> tuple[Checks, str]:
    """Initialise Horovod (with a static process set), run every family, shut down."""
    os.environ.setdefault("HOROVOD_DYNAMIC_PROCESS_SETS", "1")  # add_process_set after init
    os.environ.setdefault("HOROVOD_TIMELINE", "DYNAMIC")  # start_timeline() needs it at init
    import horovod.torch as hvd
    import torch

    first = hvd.ProcessSet([0])
    hvd.init(process_sets=[first])
    c = c_factory(hvd.rank(), hvd.size())
    families: list[tuple[str, Callable[..., None]]] = [
        ("collectives", check_collectives),
        ("grouped", check_grouped),
        ("allgather", check_allgather),
        ("broadcast", check_broadcast),
        ("alltoall", check_alltoall),
        ("reducescatter", check_reducescatter),
        ("objects", check_objects),
        ("barrier", check_barrier),
        ("optimizer", check_optimizer),
        ("sync_batch_norm", check_sync_batch_norm),
        ("elastic", check_elastic),
        ("timeline", check_timeline),
        ("process_sets", lambda hvd, torch, c: check_process_sets(hvd, torch, c, first)),
        # Last: after join() the ranks have issued different numbers of collectives, and
        # horovod.torch names unnamed ones after a per-rank counter (they would not match).
        ("join", check_join),
    ]
    for name, check in families:
        if only and name not in only:
            continue
        with c.family(name):
            check(hvd, torch, c)
    controller = "mpi" if hvd.mpi_enabled() else "gloo" if hvd.gloo_enabled() else "unknown"
    hvd.shutdown()
    return c, controller
