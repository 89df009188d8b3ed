"""Single-thread speed of each CPU of this machine, measured in turns, several rounds.

A synchronous N-rank job runs at the pace of its slowest rank: where the cores of a
(virtual) machine differ in speed, weak-scaling efficiency on one node is capped by
slowest / fastest before any communication. This measures that cap: a fixed fp32
matrix-multiply loop pinned to each CPU in turn (one thread), `--rounds` times.

    python benchmarks/machine_cores.py --rounds 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from validation_common import save

WORK = """
import os, time
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
a = np.random.default_rng(0).random((256, 256), dtype=np.float32)
start = time.perf_counter()
for _ in range(400):
    a = (a @ a) / 256.0
print(2 * 256**3 * 400 / (time.perf_counter() - start) / 1e9)
"""


def gflops_on(cpu: int) -> float:
    """GFLOP/s of the loop in a fresh single-thread process pinned to `cpu`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        ["taskset", "-c", str(cpu), sys.executable, "-c", WORK],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    started = time.time()
    speeds: dict[int, list[float]] = {cpu: [] for cpu in cpus}
    for _ in range(args.rounds):
        for cpu in cpus:
            speeds[cpu].append(round(gflops_on(cpu), 2))
    worst_round = min(
        min(s[i] for s in speeds.values()) / max(s[i] for s in speeds.values())
        for i in range(args.rounds)
    )
    medians = {cpu: statistics.median(s) for cpu, s in speeds.items()}
    save(
        "machine_cores",
        {
            "workload": "fp32 256x256 matmul loop, 1 thread, pinned with taskset",
            "gflops_per_cpu": {str(cpu): s for cpu, s in speeds.items()},
            "median_gflops_per_cpu": {str(cpu): m for cpu, m in medians.items()},
            "all_runs_slowest_over_fastest": min(min(s) for s in speeds.values())
            / max(max(s) for s in speeds.values()),
            "worst_round_slowest_over_fastest": worst_round,
            "wall_s": round(time.time() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
