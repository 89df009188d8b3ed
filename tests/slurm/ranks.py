"""One rank of a cross-node test job: `ranks.py horovod|torch` prints one JSON line.

Run by srun on the two-node cluster, natively or in the image; it must run with the
image's Python and frameworks alone (no test code is importable there).
"""

from __future__ import annotations

import json
import os
import socket
import sys

N = 100_000  # floats per all-reduce: more than fits one small message


def identity() -> dict[str, object]:
    """Where this rank runs: host name, that name's address, network namespace."""
    host = socket.gethostname()
    return {
        "host": host,
        "address": socket.gethostbyname(host),
        "netns": os.readlink("/proc/self/ns/net"),
    }


def loaded_library(prefix: str) -> str | None:
    """The path of the first mapped library whose file name starts with prefix."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if os.path.basename(path).startswith(prefix):
                return path
    return None


def horovod_rank() -> dict[str, object]:
    """A Horovod all-reduce (sum) of rank-dependent tensors, and the layout Horovod saw."""
    import horovod.torch as hvd
    import torch

    hvd.init()
    tensor = torch.arange(N, dtype=torch.float64) * (hvd.rank() + 1)
    total = hvd.allreduce(tensor, op=hvd.Sum, name="sum")
    expected = torch.arange(N, dtype=torch.float64) * sum(r + 1 for r in range(hvd.size()))
    result = {
        "rank": hvd.rank(),
        "size": hvd.size(),
        "local_size": hvd.local_size(),
        "controller": "mpi" if hvd.mpi_enabled() else "gloo",
        "sum_ok": bool(torch.equal(total, expected)),
        "sum_last": float(total[-1]),
        "libmpi": loaded_library("libmpi"),
    }
    hvd.shutdown()
    return result


def torch_rank() -> dict[str, object]:
    """torch.distributed (gloo, env:// from what srun's launcher set): an all-reduce and
    every rank's identity gathered on every rank."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, size = dist.get_rank(), dist.get_world_size()
    tensor = torch.arange(N, dtype=torch.float64) * (rank + 1)
    dist.all_reduce(tensor)
    expected = torch.arange(N, dtype=torch.float64) * sum(r + 1 for r in range(size))
    peers: list[object] = [None] * size
    dist.all_gather_object(peers, identity())
    dist.destroy_process_group()
    return {
        "rank": rank,
        "size": size,
        "master_addr": os.environ.get("MASTER_ADDR"),
        "sum_ok": bool(torch.equal(tensor, expected)),
        "peers": peers,
    }


def main(argv: list[str]) -> int:
    """Run the named collective, print this rank's result as one JSON line."""
    kinds = {"horovod": horovod_rank, "torch": torch_rank}
    if len(argv) != 1 or argv[0] not in kinds:
        print(f"usage: ranks.py {'|'.join(kinds)}", file=sys.stderr)
        return 2
    result = {**kinds[argv[0]](), **identity()}
    print("RANK " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
