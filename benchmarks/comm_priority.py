"""2-rank weak scaling in an image with the communication threads at normal vs idle priority.

`python -m validation run --comm-priority` decides how the gradient exchange's background
threads (Horovod's loop and its MPI's, gloo's under DDP) are scheduled when the compute
threads fill the rank's cores (validation/README.md, "Threads and cores"). Per round and
suite: a 1-rank baseline, then for each engine a 2-rank run at `normal` and one at `idle`,
back to back, all started as `stackbuild validate` starts them (podman, one thread per
rank, each rank pinned to its core). Efficiency = mean per-rank samples/s at the median
step / the baseline's (the weak-scaling check's definition).

    python benchmarks/comm_priority.py --image localhost/stackbuild/tensorflow:2.21-cpu \\
        --framework tensorflow --engines horovod --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from validation_common import run_in_image, save

ENGINES = {"ddp": "torchrun", "horovod": "horovodrun"}
PRIORITIES = ("normal", "idle")
RATE = "samples_per_s_median_step"


def rate(out: Path, image: str, tag: str, args: list[str], launcher: str, ranks: int) -> float:
    """Mean per-rank samples/s (median step) of one run in the image."""
    run = run_in_image(out, image, tag, *args, launcher=launcher, ranks=ranks)
    return statistics.mean(float(r[RATE]) for r in run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image", required=True)
    parser.add_argument("--framework", choices=("pytorch", "tensorflow"), required=True)
    parser.add_argument("--engines", nargs="+", choices=sorted(ENGINES), default=["horovod"])
    parser.add_argument("--suites", nargs="+", default=["cosmoflow", "climate", "gan"])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    efficiency: dict[str, dict[str, dict[str, list[float]]]] = {
        s: {e: {p: [] for p in PRIORITIES} for e in args.engines} for s in args.suites
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for round_ in range(args.rounds):
            for suite in args.suites:
                common = ["--suite", suite, "--framework", args.framework]
                common += ["--weak-scaling", "--threads", "1"]
                base = rate(out, args.image, f"{suite}-{round_}-r1", common, "none", 1)
                for engine in args.engines:
                    for priority in PRIORITIES:
                        extra = ["--sync", engine, "--comm-priority", priority]
                        tag = f"{suite}-{round_}-{engine}-{priority}"
                        value = rate(out, args.image, tag, common + extra, ENGINES[engine], 2)
                        efficiency[suite][engine][priority].append(round(value / base, 3))
                        print(suite, engine, priority, efficiency[suite][engine][priority][-1])
    summary: dict[str, Any] = {
        s: {e: {p: round(statistics.median(v), 3) for p, v in ps.items()} for e, ps in es.items()}
        for s, es in efficiency.items()
    }
    save(
        f"comm_priority_{args.framework}",
        {
            "image": args.image,
            "workload": "small configs, 1 thread/rank pinned, 1 vs 2 ranks, weak scaling",
            "efficiency_median_step": efficiency,
            "median_efficiency": summary,
            "reference": "93.5% at 2 KNL nodes (cosmoflow-benchmark, REFERENCE.md)",
        },
    )


if __name__ == "__main__":
    main()
