"""Submit a rendered job script to a real Slurm cluster with `sbatch --wait`, and check its
report. The shipped scripts, with their own runtime lines, run in test_two_nodes.py (podman
and docker, 2 nodes x 1 rank) and tests/engine/test_podman_hpc.py (1 node x 2 ranks).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


def _slurm_unusable() -> str:
    if shutil.which("sbatch") is None:
        return "sbatch not installed (scripts/setup-host.sh installs Slurm, setup.d/50-slurm.sh)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return "Slurm controller not answering: run scripts/setup.d/50-slurm.sh (as root)"
    return ""


needs_slurm = pytest.mark.skipif(bool(_slurm_unusable()), reason=_slurm_unusable() or "-")


def submit(
    script: Path, workdir: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> tuple[int, dict[str, Any], str]:
    """sbatch --wait from workdir (with env, e.g. the two-node cluster's): (the job's exit
    status, its report.json, its output)."""
    workdir.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["sbatch", "--wait", "--parsable", str(script)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )
    job_id = proc.stdout.strip().split(";")[0]
    assert job_id.isdigit(), proc.stdout + proc.stderr
    log = workdir / f"validate-pytorch-cpu-{job_id}.out"
    output = log.read_text() if log.exists() else proc.stderr
    report_file = workdir / f"validation-pytorch-cpu-{job_id}" / "report.json"
    assert report_file.exists(), output[-3000:]
    return proc.returncode, json.loads(report_file.read_text()), output


def assert_validated(status: int, report: dict[str, Any], output: str) -> None:
    """The job passed, and its report holds every check of the plan, run under srun."""
    failed = [c for c in report["checks"] if c["verdict"] == "fail"]
    assert status == 0 and report["passed"], (failed, output[-3000:])
    verdicts = {(c["check"], c["subject"]): c["verdict"] for c in report["checks"]}
    for check in ("loss-finite", "loss-falling", "cosmoflow-mae"):
        assert verdicts[(check, "cosmoflow/pytorch x1")] == "pass"
        assert verdicts[(check, "cosmoflow/pytorch x2")] == "pass"
    for check in ("params-identical", "shards-disjoint", "weak-scaling"):
        assert verdicts[(check, "cosmoflow/pytorch x2")] == "pass"
    assert verdicts[("one-vs-n-ranks", "cosmoflow/pytorch 1 vs 2 ranks")] == "pass"
    runs = report["runs"]
    assert runs["cosmoflow-pytorch-r2"]["world_size"] == 2  # two srun tasks, one DDP group
    assert runs["cosmoflow-pytorch-r2"]["sync"] == "ddp"
    assert runs["cosmoflow-pytorch-r1"]["world_size"] == 1  # srun -n1 in a 2-task job
    assert {j["tag"]: j["returncode"] for j in report["jobs"]} == {
        "probe-pytorch": 0,
        "cosmoflow-pytorch-r1": 0,
        "cosmoflow-pytorch-r2": 0,
        "consistency-r1": 0,
        "consistency-r2": 0,
    }
    assert report["request"]["launcher"] == "srun"
