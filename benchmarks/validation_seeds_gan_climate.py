"""Seed sweep of the GAN and climate quality checks on the small config, natively.

Each run is launched as `stackbuild validate --native` launches it (--weak-scaling, the
per-rank thread count of a 1,2-rank validation, torchrun for 2 PyTorch ranks, oneDNN on for
TensorFlow), then judged by the suite's quality checks. TensorFlow at 2 ranks needs Horovod
and is skipped where it is not installed.

    python benchmarks/validation_seeds_gan_climate.py --seeds 1 2 3 4 5 --name after
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from validation_common import run_ranks, save

from validation.checks import QUALITY_CHECKS
from validation.launch_env import threads_per_rank


def one_run(
    out: Path, suite: str, framework: str, ranks: int, seed: int, fault: str
) -> dict[str, Any]:
    """Train one (suite, framework, ranks, seed) job and judge it with the quality checks."""
    tag = f"{suite}-{framework}-r{ranks}-s{seed}-{fault}"
    args = ["--suite", suite, "--framework", framework, "--seed", str(seed), "--weak-scaling"]
    args += ["--threads", str(threads_per_rank(2)), "--fault", fault]
    if framework == "tensorflow" and ranks > 1:
        args += ["--sync", "horovod"]
    started = time.time()
    run = run_ranks(out, tag, ranks, *args, env={"TF_ENABLE_ONEDNN_OPTS": "1"})
    wall = time.time() - started
    checks = [check().evaluate(run) for check in QUALITY_CHECKS[suite]]  # type: ignore[attr-defined]
    metrics = next(r for r in run if r["rank"] == 0)["metrics"]
    return {
        "suite": suite,
        "framework": framework,
        "ranks": ranks,
        "seed": seed,
        "fault": fault,
        "wall_s": round(wall, 1),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)},
        "checks": {
            c.check: {"verdict": c.verdict, "measured": c.measured, "detail": c.detail}
            for c in checks
        },
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (suite, framework, ranks, check): passes, and min/median/max of the measured value."""
    groups: dict[str, dict[str, list[Any]]] = {}
    for r in runs:
        key = f"{r['suite']}/{r['framework']} x{r['ranks']} fault={r['fault']}"
        for name, c in r["checks"].items():
            groups.setdefault(key, {}).setdefault(name, []).append(c)
        groups[key].setdefault("wall_s", []).append(r["wall_s"])
    out: dict[str, Any] = {}
    for key, by_check in groups.items():
        walls = by_check.pop("wall_s")
        out[key] = {"wall_s_median": statistics.median(walls)}
        for name, cs in by_check.items():
            values = [c["measured"] for c in cs]
            out[key][name] = {
                "passed": f"{sum(c['verdict'] == 'pass' for c in cs)}/{len(cs)}",
                "min": min(values),
                "median": statistics.median(values),
                "max": max(values),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suites", nargs="+", default=["gan", "climate"])
    parser.add_argument("--frameworks", nargs="+", default=["pytorch", "tensorflow"])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--fault", default="none", help="a --fault of `validation run`")
    parser.add_argument("--name", default="", help="suffix of the results file")
    args = parser.parse_args()
    has_horovod = importlib.util.find_spec("horovod") is not None
    runs, skipped = [], []
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for suite in args.suites:
            for framework in args.frameworks:
                for ranks in args.ranks:
                    if framework == "tensorflow" and ranks > 1 and not has_horovod:
                        skipped.append(f"{suite}/{framework} x{ranks}: Horovod not installed")
                        continue
                    for seed in args.seeds:
                        r = one_run(Path(tmp), suite, framework, ranks, seed, args.fault)
                        print(
                            f"{suite}/{framework} x{ranks} seed {seed}: "
                            + ", ".join(
                                f"{k} {c['verdict']} {c['measured']}"
                                for k, c in r["checks"].items()
                            )
                            + f" ({r['wall_s']} s)",
                            flush=True,
                        )
                        runs.append(r)
    name = "validation_seeds_gan_climate" + (f"_{args.name}" if args.name else "")
    save(
        name,
        {
            "command": "python -m validation run --config small --weak-scaling (as validate)",
            "env": {"TF_ENABLE_ONEDNN_OPTS": "1"},
            "seeds": args.seeds,
            "fault": args.fault,
            "wall_s": round(time.time() - started, 1),
            "skipped": skipped,
            "summary": summarise(runs),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
