"""2-rank weak-scaling efficiency of PyTorch DDP (gloo) on CosmoFlow small, natively.

Efficiency = total samples/s at N ranks / (N x samples/s at 1 rank), first epoch excluded,
1 thread per rank in both runs (REFERENCE.md: cosmoflow-benchmark definition)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from validation_common import run_ranks, save


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        args = ("--suite", "cosmoflow", "--threads", "1", "--weak-scaling", "--epochs", "3")
        one = run_ranks(out, "r1", 1, *args)
        two = run_ranks(out, "r2", 2, *args)
    base = one[0]["samples_per_s"]
    per_rank = [r["samples_per_s"] for r in two]
    save(
        "validation_scaling",
        {
            "workload": "cosmoflow small, pytorch DDP gloo, 1 thread/rank",
            "samples_per_s_1_rank": base,
            "samples_per_s_per_rank_2_ranks": per_rank,
            "weak_scaling_efficiency": sum(per_rank) / (2 * base),
            "reference": "93.5% at 2 KNL nodes (cosmoflow-benchmark, REFERENCE.md)",
        },
    )


if __name__ == "__main__":
    main()
