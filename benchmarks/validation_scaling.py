"""2-rank weak-scaling efficiency of PyTorch DDP (gloo), natively, ranks pinned vs not.

Efficiency = mean per-rank samples/s at 2 ranks / samples/s at 1 rank (the weak-scaling
check's definition, at the median step; the mean rate beside it), first epoch excluded,
1 thread per rank in both runs (REFERENCE.md: cosmoflow-benchmark definition). Each round
runs both modes, alternating, so the machine's drift hits both: `pinned` is what the
runner does (each rank, the 1-rank baseline included, on its own core), `unpinned` is
`--no-bind` (the 1-rank baseline's helper threads may use the other core).

    python benchmarks/validation_scaling.py --suites cosmoflow gan --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from validation_common import run_ranks, save

MODES = {"pinned": (), "unpinned": ("--no-bind",)}


def efficiency(out: Path, suite: str, mode: str, round_: int) -> dict[str, float]:
    args = ("--suite", suite, "--threads", "1", "--weak-scaling", *MODES[mode])
    tag = f"{suite}-{mode}-{round_}"
    one = run_ranks(out, f"{tag}-r1", 1, *args)
    two = run_ranks(out, f"{tag}-r2", 2, *args)
    result = {}
    for key in ("samples_per_s_median_step", "samples_per_s"):
        base = one[0][key]
        result[key] = round(statistics.mean(r[key] for r in two) / base, 3)
    result["cores_1_rank"] = one[0].get("cpu_affinity")
    result["cores_2_ranks"] = [r.get("cpu_affinity") for r in two]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suites", nargs="+", default=["cosmoflow", "gan"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, dict[str, list[Any]]] = {s: {m: [] for m in MODES} for s in args.suites}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for suite in args.suites:
                for mode in MODES:
                    runs[suite][mode].append(efficiency(Path(tmp), suite, mode, round_))
                    print(suite, mode, runs[suite][mode][-1], flush=True)
    save(
        "validation_scaling",
        {
            "workload": "small configs, pytorch DDP gloo, 1 thread/rank, 1 vs 2 ranks",
            "efficiency_median_step": {
                s: {m: [r["samples_per_s_median_step"] for r in rs] for m, rs in modes.items()}
                for s, modes in runs.items()
            },
            "runs": runs,
            "reference": "93.5% at 2 KNL nodes (cosmoflow-benchmark, REFERENCE.md)",
        },
    )


if __name__ == "__main__":
    main()
