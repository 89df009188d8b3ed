"""benchmarks/gpu_device_check.sh: refuses clearly without a GPU; its plan and pins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_device_check.sh"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_device_check  # noqa: E402


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has a driver")
def test_without_a_gpu_the_script_stops_before_installing_anything(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--venv", str(venv), "--out", str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "no NVIDIA driver here (nvidia-smi not found)" in proc.stderr
    assert "--dry-run" in proc.stderr
    assert not venv.exists() and not (tmp_path / "out.json").exists()


def test_unknown_options_are_refused_with_the_usage() -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--gpus", "2"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "unknown option --gpus" in proc.stderr and "--dry-run" in proc.stderr


def test_pins_are_the_recipes_pytorch_gpu_set() -> None:
    pins = gpu_device_check.constraints("pytorch")
    assert "torch==2.13.0" in pins
    assert any(p.startswith("nvidia-nccl-cu13==") for p in pins)
    assert all("==" in p for p in pins)


def test_plan_covers_every_suite_ddp_horovod_and_full_cosmoflow() -> None:
    jobs = gpu_device_check.plan("gpu", ["pytorch", "tensorflow"], {"pytorch": True})
    names = [j.name for j in jobs]
    for fw in ("pytorch", "tensorflow"):
        for suite in ("cosmoflow", "climate", "gan"):
            assert f"{fw}/{suite} small x1" in names
        assert f"{fw}/cosmoflow full x1" in names
    assert "pytorch/cosmoflow small x1 ddp" in names
    assert "pytorch/cosmoflow small x1 horovod" in names
    assert "tensorflow/cosmoflow small x1 horovod" not in names  # no Horovod there
    full = next(j for j in jobs if j.name == "pytorch/cosmoflow full x1")
    assert full.args[full.args.index("--global-batch") + 1] == "4"  # the reference's batch


def test_ddp_runs_under_torchrun_with_nccl_asked_for_by_name() -> None:
    job = next(j for j in gpu_device_check.plan("gpu", ["pytorch"], {}) if j.engine == "ddp")
    argv = gpu_device_check._command(job, "python3", Path("/tmp/o"), "cuda", 29400)
    assert argv[:3] == ["python3", "-m", "torch.distributed.run"]
    assert argv[-2:] == ["--sync", "ddp"] and "--nproc-per-node=1" in argv
    assert argv[argv.index("--device") + 1] == "cuda"


def test_a_framework_other_than_the_pinned_one_is_recorded_as_such() -> None:
    # The device machines' own torch (2.11 CUDA 13.0) is not recipes/gpu.yaml's 2.13.
    pinned = gpu_device_check._pinned(
        {"pytorch": {"torch": "2.11.0+cu130"}, "tensorflow": {"tensorflow": "2.21.0"}}
    )
    assert pinned["pytorch"] == {"found": "2.11.0+cu130", "pin": "2.13.0", "pinned": False}
    assert pinned["tensorflow"]["pinned"] is True
