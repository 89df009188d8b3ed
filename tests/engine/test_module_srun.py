"""`module load` + `srun -n 2 python script.py` is one 2-rank job, as users run it.

The module files and wrappers are the ones `stackbuild build cpu` rendered for the image it
built (the session's pytorch-cpu); Lmod, Slurm (scripts/setup.d/50-slurm.sh) and podman are
real. Horovod forms one job over MPI (Slurm's PMI socket reaches each container) and over
Gloo (the in-image launcher starts the rendezvous), and torch.distributed's
`init_process_group()` with no arguments finds its peers from Slurm's variables. The shipped
podman job script runs unmodified across two nodes in tests/slurm/test_two_nodes.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.stack]

LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")

HOROVOD = """\
import horovod.torch as hvd
import torch
hvd.init()
total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum).item()
print(f"rank {hvd.rank()} of {hvd.size()} local {hvd.local_rank()} "
      f"{'mpi' if hvd.mpi_enabled() else 'gloo'} sum {total:g}", flush=True)
"""

TORCH_DISTRIBUTED = """\
import torch
import torch.distributed as dist
dist.init_process_group("gloo")  # no arguments: RANK, WORLD_SIZE, MASTER_* from the launcher
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(f"rank {dist.get_rank()} of {dist.get_world_size()} sum {total.item():g}", flush=True)
dist.destroy_process_group()
"""


def _unusable() -> str:
    if not LMOD_INIT.exists():
        return "Lmod not installed (scripts/setup-host.sh)"
    if shutil.which("srun") is None:
        return "Slurm not installed (scripts/setup-host.sh, setup.d/50-slurm.sh)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False)
    if "UP" not in ping.stdout:
        return "Slurm controller not answering: run scripts/setup.d/50-slurm.sh (as root)"
    return ""


pytestmark.append(pytest.mark.skipif(bool(_unusable()), reason=_unusable() or "-"))


@pytest.fixture(scope="module")
def module_job(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, object]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run(shell lines) after `module load` of the built pytorch-cpu, in a work folder."""
    folder, _ = cpu_stack_build("pytorch-cpu")
    work = tmp_path_factory.mktemp("module-job")
    (work / "hvd_sum.py").write_text(HOROVOD)
    (work / "ddp_sum.py").write_text(TORCH_DISTRIBUTED)

    def run(lines: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        script = (
            f"source {LMOD_INIT}\nmodule use {folder}/modulefiles/lmod\n"
            f"module load pytorch/2.13-cpu\ncd {work}\n{lines}\n"
        )
        return subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=timeout, check=False
        )

    return run


def _ranks(stdout: str) -> list[str]:
    return sorted(line for line in stdout.splitlines() if re.match(r"rank \d", line))


def test_horovod_over_mpi_is_one_job_under_srun(module_job: Callable) -> None:
    result = module_job("srun -n 2 --mpi=pmi2 python hvd_sum.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _ranks(result.stdout) == [
        "rank 0 of 2 local 0 mpi sum 3",
        "rank 1 of 2 local 1 mpi sum 3",
    ], result.stdout + result.stderr[-2000:]


def test_horovod_over_gloo_is_one_job_under_srun(module_job: Callable) -> None:
    result = module_job("HOROVOD_CONTROLLER=gloo srun -n 2 --mpi=none python hvd_sum.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _ranks(result.stdout) == [
        "rank 0 of 2 local 0 gloo sum 3",
        "rank 1 of 2 local 1 gloo sum 3",
    ], result.stdout + result.stderr[-2000:]


def test_torch_distributed_without_arguments_is_one_job_under_srun(module_job: Callable) -> None:
    result = module_job("srun -n 2 python ddp_sum.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert _ranks(result.stdout) == ["rank 0 of 2 sum 3", "rank 1 of 2 sum 3"], result.stdout


def test_the_wrapper_runs_in_the_callers_folder_with_its_variables(module_job: Callable) -> None:
    lines = (
        "echo 7 > input.txt\npwd\n"
        "OMP_NUM_THREADS=3 python -c "
        "\"import os; print(open('input.txt').read().strip(), os.environ['OMP_NUM_THREADS'], "
        "os.environ['STACKBUILD_RUNTIME'], os.getcwd())\""
    )
    result = module_job(lines)
    assert result.returncode == 0, result.stderr[-3000:]
    here, *inside = result.stdout.split()
    assert inside == ["7", "3", "podman", here]


def test_a_docker_module_under_srun_forms_one_job_over_gloo(tmp_path: Path) -> None:
    """Docker cannot pass Slurm's PMI socket (its containers are dockerd's children): the
    in-image launcher then runs Horovod over Gloo, even when srun offers PMI."""
    docker = shutil.which("docker", path="/usr/bin") or shutil.which("docker")
    image = "localhost/stackbuild/pytorch:2.13-cpu"
    if (
        docker is None
        or subprocess.run(
            [docker, "image", "inspect", image], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip(f"{image} is not in Docker's store (test_docker_engine.py builds it)")
    render = [str(Path(sys.executable).with_name("stackbuild")), "render", "cpu"]
    render += ["-v", "pytorch-cpu", "--only", "modules", "--runtime", "docker"]
    subprocess.run([*render, "-o", str(tmp_path / "r")], check=True, capture_output=True)
    (tmp_path / "hvd_sum.py").write_text(HOROVOD)
    (tmp_path / "ddp_sum.py").write_text(TORCH_DISTRIBUTED)
    script = (
        f"source {LMOD_INIT}\nmodule use {tmp_path}/r/pytorch-cpu/modulefiles/lmod\n"
        f"module load pytorch/2.13-cpu\ncd {tmp_path}\nexport PATH={Path(docker).parent}:$PATH\n"
        "srun -n 2 --mpi=pmi2 python hvd_sum.py && srun -n 2 python ddp_sum.py\n"
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=400, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _ranks(result.stdout) == [
        "rank 0 of 2 local 0 gloo sum 3",
        "rank 0 of 2 sum 3",
        "rank 1 of 2 local 1 gloo sum 3",
        "rank 1 of 2 sum 3",
    ], result.stdout
