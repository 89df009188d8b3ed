"""Latency of one torch.distributed all-reduce (gloo, 2 ranks on this machine), ranks pinned
to one core each vs not pinned, side by side, several rounds.

A synchronous 2-rank step pays its all-reduces on top of its compute; weak-scaling efficiency
of a small model (the validation's GAN: ~11 ms of compute and two ~300 KB all-reduces per
step) is decided by their latency, and by its tail more than by its median. Sizes: 1 float
(pure latency), 70k and 300k floats (the small GAN's discriminator and both its models).

    python benchmarks/collective_latency.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from validation_common import save

SIZES = (1, 70_000, 300_000)

WORKER = """
import json, os, sys, time
import torch, torch.distributed as dist
rank = int(os.environ["LOCAL_RANK"])
if sys.argv[1] == "pinned":
    os.sched_setaffinity(0, {rank % os.cpu_count()})
torch.set_num_threads(1)
dist.init_process_group("gloo")
out = {}
for n in json.loads(sys.argv[2]):
    t = torch.ones(n)
    for _ in range(20):
        dist.all_reduce(t)
    times = []
    for _ in range(int(sys.argv[3])):
        start = time.perf_counter()
        dist.all_reduce(t)
        times.append(time.perf_counter() - start)
    times.sort()
    out[n] = {q: times[int(q / 100 * (len(times) - 1))] * 1e3 for q in (10, 50, 90, 99)}
    out[n]["over_2ms"] = sum(x > 2e-3 for x in times) / len(times)
if rank == 0:
    open(sys.argv[4], "w").write(json.dumps(out))
dist.destroy_process_group()
"""


def measure(mode: str, calls: int) -> dict[str, Any]:
    """Latency quantiles (ms) and the share of calls over 2 ms, per size, seen by rank 0."""
    with tempfile.TemporaryDirectory() as tmp:
        script, result = Path(tmp) / "worker.py", Path(tmp) / "out.json"
        script.write_text(WORKER)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc-per-node=2", str(script), mode, json.dumps(SIZES), str(calls)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([*cmd, str(result)], env=env, check=True, capture_output=True)
        data: dict[str, Any] = json.loads(result.read_text())
    return {size: {k: round(v, 3) for k, v in q.items()} for size, q in data.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"pinned": [], "unpinned": []}
    for _ in range(args.rounds):
        for mode, results in runs.items():
            results.append(measure(mode, args.calls))
            print(mode, results[-1], flush=True)
    save(
        "collective_latency",
        {
            "workload": f"gloo all_reduce, 2 ranks, {args.calls} calls per size, 1 thread/rank",
            "unit": "ms (quantiles 10/50/90/99 of rank 0's calls); over_2ms: share of calls",
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
