"""Single-thread speed of each CPU of this machine, alone and all at once, several rounds.

Weak scaling on one node is capped before any communication by what the CPUs give when
they all work at once: a synchronous N-rank job runs at the pace of its slowest rank, so
the cap is the slowest CPU's rate with all busy over one CPU's rate alone. Where (virtual)
CPUs share a physical core or the host is oversubscribed, that is well below 1. Each
round runs a fixed fp32 matrix-multiply loop (one thread, pinned with taskset) on each CPU
in turn, then on all CPUs at once; `--rounds` rounds.

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
for _ in range(2000):
    a = (a @ a) / 256.0
print(2 * 256**3 * 2000 / (time.perf_counter() - start) / 1e9)
"""


def gflops_on(*cpus: int) -> list[float]:
    """GFLOP/s of the loop in fresh single-thread processes, one pinned to each of `cpus`,
    all started at once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            ["taskset", "-c", str(cpu), sys.executable, "-c", WORK],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for cpu in cpus
    ]
    outs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode for proc in procs):
        raise SystemExit("machine_cores: the matmul loop failed")
    return [round(float(out.split()[-1]), 2) for out in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    started = time.time()
    speeds: dict[int, list[float]] = {cpu: [] for cpu in cpus}
    together: dict[int, list[float]] = {cpu: [] for cpu in cpus}
    caps = []
    for _ in range(args.rounds):
        for cpu in cpus:
            speeds[cpu].extend(gflops_on(cpu))
        at_once = gflops_on(*cpus)
        for cpu, rate in zip(cpus, at_once, strict=True):
            together[cpu].append(rate)
        caps.append(round(min(at_once) / max(speeds[cpu][-1] for cpu in cpus), 3))
    worst_round = min(
        min(s[i] for s in speeds.values()) / max(s[i] for s in speeds.values())
        for i in range(args.rounds)
    )
    medians = {cpu: statistics.median(s) for cpu, s in speeds.items()}
    save(
        "machine_cores",
        {
            "workload": "fp32 256x256 matmul loop (2000 steps), 1 thread, pinned with taskset",
            "gflops_per_cpu": {str(cpu): s for cpu, s in speeds.items()},
            "gflops_per_cpu_all_busy": {str(cpu): s for cpu, s in together.items()},
            "weak_scaling_cap_per_round": caps,
            "weak_scaling_cap_median": statistics.median(caps),
            "median_gflops_per_cpu": {str(cpu): m for cpu, m in medians.items()},
            "all_runs_slowest_over_fastest": min(min(s) for s in speeds.values())
            / max(max(s) for s in speeds.values()),
            "worst_round_slowest_over_fastest": worst_round,
            "wall_s": round(time.time() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
