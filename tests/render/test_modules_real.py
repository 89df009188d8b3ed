"""Module files load in real Lmod and environment-modules; wrappers pass the right command line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from stackbuild.render.renderer import render_variant
from tests.helpers import needs_tool

LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")
#: Shifter pulls from a registry: the wrappers refuse localhost/ images (tested below).
PUBLISHED = "docker:registry.example.org/stackbuild/tensorflow:2.21-knl"
MODULECMD_TCL = Path("/opt/environment-modules/usr/lib/x86_64-linux-gnu/modulecmd.tcl")

pytestmark = pytest.mark.tools


def rendered(tmp_path: Path, recipe: str, name: str) -> tuple[Path, object]:
    variants = expand_matrix(load_recipe(PROJECT_ROOT / f"recipes/{recipe}.yaml"))
    variant = select_variant(variants, name)
    return render_variant(variant, tmp_path), variant


def bash(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.skipif(not LMOD_INIT.exists(), reason="Lmod not installed (scripts/setup-host.sh)")
def test_lua_module_loads_in_lmod(tmp_path: Path):
    out, v = rendered(tmp_path, "cpu", "pytorch-cpu")
    module = f"{v.module_name}/{v.module_version}"
    result = bash(
        f"source {LMOD_INIT}; module use {out}/modulefiles/lmod && module load {module} && "
        f"command -v torchrun && echo VARIANT=$STACKBUILD_VARIANT && module show {module} 2>&1 "
        f"&& module whatis {module} 2>&1 && module list 2>&1"
    )
    assert result.returncode == 0, result.stderr
    wrappers = out / "wrappers" / v.module_name / v.module_version / "bin"
    assert f"{wrappers}/torchrun" in result.stdout
    assert "VARIANT=pytorch-cpu" in result.stdout
    assert 'prepend_path("PATH","' + str(wrappers) + '")' in result.stdout
    assert "Image: localhost/stackbuild/pytorch:2.13-cpu" in result.stdout
    assert module in result.stdout


@pytest.mark.skipif(not LMOD_INIT.exists(), reason="Lmod not installed (scripts/setup-host.sh)")
def test_lmod_refuses_conflicting_stacks(tmp_path: Path):
    tf_out, tf = rendered(tmp_path, "cpu", "tensorflow-cpu")
    pt_out, pt = rendered(tmp_path, "cpu", "pytorch-cpu")
    result = bash(
        f"source {LMOD_INIT}; module use {tf_out}/modulefiles/lmod; "
        f"module use {pt_out}/modulefiles/lmod; module load {tf.module_name}/{tf.module_version}"
        f" && module load {pt.module_name}/{pt.module_version}"
    )
    assert result.returncode != 0
    assert "conflict" in result.stderr.lower()


@needs_tool("tclsh")
@pytest.mark.skipif(not MODULECMD_TCL.exists(), reason="environment-modules not unpacked")
def test_tcl_module_loads_in_environment_modules(tmp_path: Path):
    out, v = rendered(tmp_path, "knl", "tensorflow-knl")
    module = f"{v.module_name}/{v.module_version}"
    cmd = f"tclsh {MODULECMD_TCL} bash"
    result = bash(
        f'export MODULEPATH={out}/modulefiles/tcl; eval "$({cmd} load {module})" && '
        f"command -v python && echo RUNTIME=$STACKBUILD_RUNTIME && {cmd} show {module} 2>&1"
    )
    assert result.returncode == 0, result.stderr
    assert f"{out}/wrappers/{v.module_name}/{v.module_version}/bin/python" in result.stdout
    assert "RUNTIME=shifter" in result.stdout
    assert "module-whatis\t{Image: localhost/stackbuild/tensorflow:2.21-knl}" in result.stdout


def fake_runtime(tmp_path: Path, name: str) -> dict[str, str]:
    """A stand-in runtime that prints its argv, for checking the wrapper's command line."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    script = bindir / name
    script.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}


def test_shifter_wrapper_runs_the_command_in_the_image(tmp_path: Path):
    out, v = rendered(tmp_path, "knl", "tensorflow-knl")
    wrapper = out / "wrappers" / v.module_name / v.module_version / "bin" / "python"
    env = fake_runtime(tmp_path, "shifter") | {"STACKBUILD_IMAGE_OVERRIDE": PUBLISHED}
    result = subprocess.run(
        [wrapper, "train.py", "--epochs", "2 words"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert result.stdout.splitlines() == [
        "--image=docker:registry.example.org/stackbuild/tensorflow:2.21-knl",
        "--module=mpich",
        f"--volume={Path.cwd()}:{Path.cwd()}",
        "--",
        "python",
        "train.py",
        "--epochs",
        "2 words",
    ]


def test_wrapper_image_can_be_overridden(tmp_path: Path):
    out, v = rendered(tmp_path, "gpu", "pytorch-gpu")
    wrapper = out / "wrappers" / v.module_name / v.module_version / "bin" / "torchrun"
    env = fake_runtime(tmp_path, "shifter") | {"STACKBUILD_IMAGE_OVERRIDE": "docker:mine:1"}
    result = subprocess.run(
        [wrapper, "-n", "4"], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.splitlines()[:2] == ["--image=docker:mine:1", "--module=gpu,nccl-plugin"]


def test_shifter_wrapper_in_an_srun_task_runs_the_slurm_launcher(tmp_path: Path):
    out, v = rendered(tmp_path, "knl", "tensorflow-knl")
    wrapper = out / "wrappers" / v.module_name / v.module_version / "bin" / "python"
    env = fake_runtime(tmp_path, "shifter") | {
        "SLURM_STEP_ID": "0",
        "SLURM_PROCID": "1",
        "STACKBUILD_IMAGE_OVERRIDE": PUBLISHED,
    }
    result = subprocess.run([wrapper, "train.py"], capture_output=True, text=True, env=env)
    argv = result.stdout.splitlines()
    # Shifter passes the host environment and file descriptors in: only the launcher is added.
    tail = ["--", "python", "/opt/stackbuild/validation/slurm_launch.py", "--", "python"]
    assert argv[-6:] == [*tail, "train.py"], argv


def test_a_missing_runtime_names_itself_and_what_to_load(tmp_path: Path):
    out, v = rendered(tmp_path, "cpu", "pytorch-cpu")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "bash").symlink_to("/bin/bash")
    wrapper = out / "wrappers" / v.module_name / v.module_version / "bin" / "python"
    result = subprocess.run(
        [wrapper, "-c", "1"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path / "bin")},
    )
    assert result.returncode == 127
    assert "pytorch/2.13-cpu: podman is not on PATH" in result.stderr
    assert "load its module" in result.stderr


def test_the_shifter_wrapper_refuses_an_image_that_is_only_local(tmp_path: Path):
    out, v = rendered(tmp_path, "knl", "tensorflow-knl")
    wrapper = out / "wrappers" / v.module_name / v.module_version / "bin" / "python"
    result = subprocess.run(
        [wrapper, "train.py"], capture_output=True, text=True, env=fake_runtime(tmp_path, "shifter")
    )
    assert result.returncode == 2 and result.stdout == ""  # shifter never ran
    assert "localhost/stackbuild/tensorflow:2.21-knl is only in a local store" in result.stderr
