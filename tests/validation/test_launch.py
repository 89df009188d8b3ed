"""Command lines for every runtime x launcher, as built (nothing is run)."""

from __future__ import annotations

import pytest

from validation.launch import LaunchPlan, build_command

ARGS = ["run", "--suite", "cosmoflow"]
MOUNTS = (("/host/out", "/validation/out"),)


def test_native_single_rank_runs_the_module_directly() -> None:
    argv = build_command(LaunchPlan(python="/venv/bin/python"), ARGS)
    assert argv == ["/venv/bin/python", "-m", "validation", *ARGS]


def test_native_torchrun_uses_the_chosen_interpreter() -> None:
    argv = build_command(LaunchPlan(launcher="torchrun", ranks=2, python="/py"), ARGS)
    assert argv[:3] == ["/py", "-m", "torch.distributed.run"]
    assert "--nproc-per-node=2" in argv and "--standalone" in argv
    assert argv[-6:] == ["/py", "-m", "validation", *ARGS]


def test_podman_runs_torchrun_inside_one_container() -> None:
    plan = LaunchPlan(
        runtime="podman",
        launcher="torchrun",
        ranks=2,
        image="img:1",
        mounts=MOUNTS,
        env={"OMP_NUM_THREADS": "1"},
    )
    argv = build_command(plan, ARGS)
    assert argv[:6] == ["podman", "run", "--rm", "--network=host", "--ipc=host", "--pid=host"]
    assert argv[6:8] == ["--volume=/host/out:/validation/out", "--env=OMP_NUM_THREADS=1"]
    i = argv.index("img:1")
    assert argv[i + 1 : i + 5] == ["torchrun", "--standalone", "--nproc-per-node=2", "--no-python"]
    assert argv[-6:] == ["python", "-m", "validation", *ARGS]


def test_docker_gpu_flag_differs_from_podman() -> None:
    docker = build_command(LaunchPlan(runtime="docker", image="i", gpu=True), ARGS)
    podman = build_command(LaunchPlan(runtime="podman", image="i", gpu=True), ARGS)
    assert "--gpus=all" in docker and "--device=nvidia.com/gpu=all" in podman


def test_srun_shifter_starts_one_container_per_rank() -> None:
    plan = LaunchPlan(
        runtime="shifter",
        launcher="srun",
        ranks=4,
        image="docker:repo:tag",
        mounts=MOUNTS,
        env={"OMP_NUM_THREADS": "2"},
    )
    argv = build_command(plan, ARGS)
    assert argv[:4] == ["srun", "--ntasks=4", "--mpi=pmi2", "--kill-on-bad-exit=1"]
    s = argv.index("shifter")
    assert argv[s + 1] == "--image=docker:repo:tag"
    assert "--volume=/host/out:/validation/out" in argv
    assert argv[-6:] == ["python", "-m", "validation", *ARGS]
    assert "OMP_NUM_THREADS=2" in argv[3:s]  # env set on the host side
    # Rank 0's host is known only inside the step: the harness reads it from Slurm.
    assert not any(a.startswith("MASTER_ADDR=") for a in argv)


def test_srun_podman_passes_the_slurm_task_variables_in() -> None:
    argv = build_command(LaunchPlan(runtime="podman", launcher="srun", ranks=2, image="i"), ARGS)
    passed = {a.removeprefix("--env=") for a in argv[: argv.index("i")] if a.startswith("--env=")}
    assert {"SLURM_PROCID", "SLURM_STEP_ID", "SLURM_STEP_NODELIST", "PMI_RANK"} <= passed
    # Each task hands Slurm's PMI socket to its container as fd 3 (one MPI job, not N).
    p = argv.index("podman")
    assert argv[p - 4 : p - 2] == ["bash", "-c"] and "--preserve-fds=1" in argv


def test_srun_docker_cannot_pass_pmi_and_gets_no_fd_shim() -> None:
    argv = build_command(LaunchPlan(runtime="docker", launcher="srun", ranks=2, image="i"), ARGS)
    assert "bash" not in argv and not any(a.startswith("--preserve-fds") for a in argv)


def test_srun_podman_hpc_passes_mpi_flag() -> None:
    argv = build_command(
        LaunchPlan(runtime="podman-hpc", launcher="srun", ranks=2, image="img", gpu=True), ARGS
    )
    p = argv.index("podman-hpc")
    assert argv[p : p + 3] == ["podman-hpc", "run", "--rm"]
    assert "--gpu" in argv and "--mpi" in argv


def test_apptainer_exec_with_binds_and_nv() -> None:
    argv = build_command(
        LaunchPlan(runtime="apptainer", image="img.sif", gpu=True, mounts=MOUNTS), ARGS
    )
    assert argv[:5] == ["apptainer", "exec", "--nv", "--bind=/host/out:/validation/out", "img.sif"]


def test_mpirun_outside_apptainer_passes_rendezvous_per_flavour() -> None:
    mpich = build_command(
        LaunchPlan(runtime="apptainer", launcher="mpirun", ranks=2, image="img.sif"), ARGS
    )
    assert mpich[:3] == ["mpirun", "-np", "2"] and "-genv" in mpich
    ompi = build_command(
        LaunchPlan(runtime="native", launcher="mpirun", ranks=2, mpi_flavor="openmpi"), ARGS
    )
    assert ompi[3:5] == ["-x", "MASTER_ADDR"]


def test_horovodrun_inside_container() -> None:
    argv = build_command(
        LaunchPlan(runtime="podman", launcher="horovodrun", ranks=2, image="i"), ARGS
    )
    i = argv.index("i")
    assert argv[i + 1 : i + 6] == ["horovodrun", "-np", "2", "-H", "localhost:2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtime": "podman"}, "needs an image"),
        ({"ranks": 2}, "need a launcher"),
        ({"runtime": "lxc", "image": "i"}, "unknown runtime"),
    ],
)
def test_bad_plans_are_refused_with_a_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LaunchPlan(**kwargs)
