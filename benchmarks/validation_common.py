"""Shared helpers for the validation benchmarks: run `python -m validation run`, save JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def run_ranks(
    out: Path, tag: str, ranks: int, *args: str, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run a training job on `ranks` ranks (torchrun when > 1) and return rank results."""
    from validation.results import load_run

    cmd = [sys.executable, "-m", "validation", "run", "--out", str(out), "--tag", tag, *args]
    if ranks > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={ranks}",
            "--no-python",
            *cmd,
        ]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    subprocess.run(cmd, env=full_env, check=True, stdout=subprocess.DEVNULL)
    return load_run(out, tag)


def run_in_image(
    out: Path,
    image: str,
    tag: str,
    *args: str,
    launcher: str = "none",
    ranks: int = 1,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run `python -m validation run ARGS` in the image as `stackbuild validate` starts it
    (podman, `out` mounted, one OpenMP thread; `launcher` for ranks > 1); rank results."""
    from validation.launch import CONTAINER_OUT, LaunchPlan, build_command
    from validation.results import load_run

    plan = LaunchPlan(
        runtime="podman",
        launcher=launcher,
        ranks=ranks,
        image=image,
        mounts=((str(out), CONTAINER_OUT),),
        env={"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )
    argv = build_command(plan, ["run", *args, "--tag", tag, "--out", CONTAINER_OUT])
    subprocess.run(argv, env=os.environ, check=True, stdout=subprocess.DEVNULL)
    return load_run(out, tag)


def save(name: str, data: dict[str, Any]) -> Path:
    """Write benchmarks/results/<name>.json with machine info."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": len(os.sched_getaffinity(0)),
            "platform": platform.platform(),
            "load_avg_1min": os.getloadavg()[0],
        },
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    print(json.dumps(data, indent=1))
    return path
