"""Collective smoke check: allreduce/allgather/broadcast values, checked on every rank.

Horovod in TensorFlow and PyTorch (the default), or torch.distributed with --api torch.
Needs only the frameworks it checks. Run it under a launcher with 2 or more ranks::

    horovodrun -np 2 --gloo python -m validation.smoke
    horovodrun -np 2 --mpi  python -m validation.smoke --frameworks torch
    mpirun -np 2 python -m validation.smoke
    torchrun --standalone --nproc-per-node=2 -m validation.smoke --api torch

A single process (no launcher) also works and checks the size-1 case.

Both frameworks run in the same process, one after the other: Horovod's
TensorFlow and PyTorch bindings are separate libraries with their own
background threads. The TensorFlow one is initialised first and its
collectives act as a barrier before the PyTorch one initialises, so the Gloo
rendezvous of the two never overlaps; with MPI the second one reuses the
already-initialised MPI.

Exit status: 0 when every check passed, 1 when any value was wrong or a
requested framework failed to import or run.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

FRAMEWORKS = ("tensorflow", "torch")


def expected_values(size: int) -> dict[str, list[float]]:
    """Values every rank must see, for ranks 0..size-1 each holding [r+1, 2(r+1), 3(r+1)]."""
    total = size * (size + 1) / 2  # sum of (rank + 1)
    return {
        "sum": [total * k for k in (1.0, 2.0, 3.0)],
        "average": [total / size * k for k in (1.0, 2.0, 3.0)],
        "allgather": [float(r + 1) for r in range(size)],
        "broadcast": [1.0, 2.0, 3.0],  # rank 0's tensor
    }


def close(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(
        abs(g - w) <= 1e-5 * max(1.0, abs(w)) for g, w in zip(got, want, strict=True)
    )


def report(fw: str, rank: int, name: str, got: list[float], want: list[float]) -> bool:
    ok = close(got, want)
    status = "OK" if ok else "MISMATCH"
    print(f"[rank {rank}] {fw} {name}: got={got} expected={want} {status}", flush=True)
    return ok


def check_tensorflow() -> tuple[bool, object]:
    import horovod.tensorflow as hvd
    import tensorflow as tf

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    want = expected_values(size)
    base = tf.constant([1.0, 2.0, 3.0], dtype=tf.float32) * float(rank + 1)
    ok = True
    got = hvd.allreduce(base, op=hvd.Sum, name="smoke_tf_sum").numpy().tolist()
    ok &= report("tensorflow", rank, "allreduce(sum)", got, want["sum"])
    got = hvd.allreduce(base, op=hvd.Average, name="smoke_tf_avg").numpy().tolist()
    ok &= report("tensorflow", rank, "allreduce(average)", got, want["average"])
    got = hvd.allgather(tf.constant([float(rank + 1)]), name="smoke_tf_gather").numpy().tolist()
    ok &= report("tensorflow", rank, "allgather", got, want["allgather"])
    got = hvd.broadcast(base, root_rank=0, name="smoke_tf_bcast").numpy().tolist()
    ok &= report("tensorflow", rank, "broadcast", got, want["broadcast"])
    # tf.function path (graph mode op kernels)
    fn = tf.function(lambda t: hvd.allreduce(t, op=hvd.Sum, name="smoke_tf_fn_sum"))
    got = fn(base).numpy().tolist()
    ok &= report("tensorflow", rank, "tf.function allreduce(sum)", got, want["sum"])
    return ok, hvd


def check_torch() -> tuple[bool, object]:
    import horovod.torch as hvd
    import torch

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    want = expected_values(size)
    base = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float32) * float(rank + 1)
    ok = True
    got = hvd.allreduce(base, op=hvd.Sum, name="smoke_torch_sum").tolist()
    ok &= report("torch", rank, "allreduce(sum)", got, want["sum"])
    got = hvd.allreduce(base, op=hvd.Average, name="smoke_torch_avg").tolist()
    ok &= report("torch", rank, "allreduce(average)", got, want["average"])
    inplace = base.clone()
    hvd.allreduce_(inplace, op=hvd.Sum, name="smoke_torch_sum_")
    ok &= report("torch", rank, "allreduce_(sum, in place)", inplace.tolist(), want["sum"])
    got = hvd.allgather(torch.tensor([float(rank + 1)]), name="smoke_torch_gather").tolist()
    ok &= report("torch", rank, "allgather", got, want["allgather"])
    got = hvd.broadcast(base, root_rank=0, name="smoke_torch_bcast").tolist()
    ok &= report("torch", rank, "broadcast", got, want["broadcast"])
    return ok, hvd


def check_torch_distributed(backend: str) -> bool:
    """torch.distributed (as DDP uses it), started by torchrun (env:// rendezvous)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group(backend=backend)
    try:
        rank, size = dist.get_rank(), dist.get_world_size()
        want = expected_values(size)
        base = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float32) * float(rank + 1)
        ok = True
        total = base.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        ok &= report(
            f"torch.distributed/{backend}", rank, "all_reduce(sum)", total.tolist(), want["sum"]
        )
        average = total / size
        ok &= report(
            f"torch.distributed/{backend}",
            rank,
            "all_reduce/size",
            average.tolist(),
            want["average"],
        )
        parts = [torch.zeros(1) for _ in range(size)]
        dist.all_gather(parts, torch.tensor([float(rank + 1)]))
        got = torch.cat(parts).tolist()
        ok &= report(f"torch.distributed/{backend}", rank, "all_gather", got, want["allgather"])
        sent = base.clone()
        dist.broadcast(sent, src=0)
        ok &= report(
            f"torch.distributed/{backend}", rank, "broadcast", sent.tolist(), want["broadcast"]
        )
        print(
            f"[rank {rank}] smoke {'PASSED' if ok else 'FAILED'} "
            f"(size={size}, torch.distributed backend={backend})",
            flush=True,
        )
        return ok
    finally:
        dist.destroy_process_group()


CHECKS = {"tensorflow": check_tensorflow, "torch": check_torch}


def controller(hvd: object) -> str:
    if hvd.mpi_enabled():
        return "mpi"
    if hvd.gloo_enabled():
        return "gloo"
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--frameworks",
        default=os.environ.get("SMOKE_FRAMEWORKS", ",".join(FRAMEWORKS)),
        help="comma-separated subset of: tensorflow,torch (default: both; env SMOKE_FRAMEWORKS)",
    )
    parser.add_argument(
        "--api",
        choices=("horovod", "torch"),
        default="horovod",
        help="horovod (default), or torch for torch.distributed under torchrun",
    )
    parser.add_argument("--backend", default="gloo", help="torch.distributed backend")
    args = parser.parse_args(argv)
    if args.api == "torch":
        try:
            return 0 if check_torch_distributed(args.backend) else 1
        except Exception:
            traceback.print_exc()
            return 1
    wanted = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in CHECKS]
    if unknown or not wanted:
        parser.error(f"unknown frameworks {unknown}; choose from {FRAMEWORKS}")

    all_ok = True
    libs = []
    for fw in wanted:
        try:
            ok, hvd = CHECKS[fw]()
            libs.append(hvd)
        except Exception:
            traceback.print_exc()
            print(f"{fw}: check raised an exception", file=sys.stderr, flush=True)
            ok = False
        all_ok &= ok
    rank = libs[0].rank() if libs else -1
    size = libs[0].size() if libs else -1
    ctrl = ",".join(sorted({controller(hvd) for hvd in libs})) or "none"
    # shut down in reverse order: the first library may own MPI and finalize it
    for hvd in reversed(libs):
        hvd.shutdown()
    verdict = "PASSED" if all_ok else "FAILED"
    print(
        f"[rank {rank}] smoke {verdict} (size={size}, controller={ctrl}, frameworks={wanted})",
        flush=True,
    )
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
