"""The module's `ipengines` command: its refusals, before anything is submitted."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from stackbuild.render.renderer import render_variant


@pytest.fixture
def ipengines(tmp_path: Path) -> Path:
    variant = select_variant(
        expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml")), "pytorch-cpu"
    )
    out = render_variant(variant, tmp_path / "r", formats=["modules"])
    return out / "wrappers/pytorch/2.13-cpu/bin/ipengines"


def run(script: Path, args: list[str], cwd: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(script), *args],
        cwd=cwd,
        env={"PATH": path, "HOME": str(cwd)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_help_names_the_options(ipengines: Path, tmp_path: Path):
    proc = run(ipengines, ["--help"], tmp_path, "/usr/bin:/bin")
    assert proc.returncode == 0
    assert "usage: ipengines [-n ENGINES]" in proc.stdout


def test_without_sbatch_it_says_where_to_run_it(ipengines: Path, tmp_path: Path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("dirname", "realpath", "mkdir"):
        os.symlink(str(shutil.which(tool)), bindir / tool)
    proc = run(ipengines, ["-n", "2"], tmp_path, str(bindir))
    assert proc.returncode == 127
    assert "pytorch/2.13-cpu ipengines: sbatch is not on PATH" in proc.stderr
    assert "Slurm login node" in proc.stderr


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="Slurm not installed")
def test_a_profile_dir_the_containers_cannot_see_is_refused(ipengines: Path, tmp_path: Path):
    work = tmp_path / "notebooks"
    work.mkdir()
    proc = run(ipengines, ["--profile-dir", str(tmp_path / "elsewhere")], work, os.environ["PATH"])
    assert proc.returncode == 2
    assert "is outside" in proc.stderr and "run ipengines from the notebook's directory" in (
        proc.stderr
    )
    assert not (tmp_path / "elsewhere").exists()
