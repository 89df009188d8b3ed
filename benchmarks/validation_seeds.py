"""Seed sweep of the CosmoFlow small config: the validation MAE / no-skill baseline ratio that
the cosmoflow-mae check judges, for each framework and seed (data and initial weights both
follow the seed), so a flaky pass shows up as a spread that reaches the threshold.

    python benchmarks/validation_seeds.py --label after --seeds 1 2 3 4 5 1234

Results accumulate in benchmarks/results/validation_seeds.json under `--label` (other labels
already there are kept, so a before/after pair can sit side by side)."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from validation_common import RESULTS, run_ranks, save

NAME = "validation_seeds"


def sweep(frameworks: list[str], seeds: list[int], extra: list[str]) -> dict[str, Any]:
    """Train cosmoflow small once per framework and seed; the check's verdict for each."""
    from validation.checks import CosmoFlowMAECheck
    from validation.config import SMALL, config_dict

    check = CosmoFlowMAECheck()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for framework in frameworks:
            for seed in seeds:
                tag = f"{framework}-{seed}"
                args = ["--suite", "cosmoflow", "--framework", framework, "--seed", str(seed)]
                start = time.time()
                # One thread, as `stackbuild validate --ranks 1,2` gives each rank on 2 cores.
                run = run_ranks(
                    Path(tmp), tag, 1, *args, "--threads", "1", *extra,
                    env={"OMP_NUM_THREADS": "1", "TF_ENABLE_ONEDNN_OPTS": "1"},
                )  # fmt: skip
                verdict = check.evaluate(run)
                runs.append(
                    {
                        "framework": framework,
                        "seed": seed,
                        "mae_ratio": verdict.measured,
                        "verdict": verdict.verdict,
                        "val_mae": run[0]["metrics"]["val_mae"],
                        "baseline_mae": run[0]["metrics"]["baseline_mae"],
                        "steps": run[0]["steps"],
                        "train_wall_s": round(run[0]["wall_s"], 2),
                        "process_wall_s": round(time.time() - start, 2),
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for framework in frameworks:
        ratios = [r["mae_ratio"] for r in runs if r["framework"] == framework]
        summary[framework] = {
            "min": min(ratios),
            "max": max(ratios),
            "mean": round(sum(ratios) / len(ratios), 4),
            "failed": sum(r["verdict"] != "pass" for r in runs if r["framework"] == framework),
        }
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "threshold": check.max_ratio,
        "extra_args": extra,
        "config": config_dict(SMALL["cosmoflow"]),
        "runs": runs,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current", help="key the results are stored under")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 1234])
    parser.add_argument("--frameworks", nargs="+", default=["pytorch", "tensorflow"])
    parser.add_argument(
        "extra", nargs="*", help="extra `validation run` arguments (after --), e.g. --epochs 8"
    )
    args = parser.parse_args()
    path = RESULTS / f"{NAME}.json"
    previous = json.loads(path.read_text()).get("results", {}) if path.exists() else {}
    result = sweep(args.frameworks, args.seeds, args.extra)
    save(NAME, {"results": {**previous, args.label: result}})


if __name__ == "__main__":
    main()
