"""The in-image launcher that makes one srun step one job (validation/slurm_launch.py)."""

from __future__ import annotations

import json
import subprocess
import sys

from stackbuild import PROJECT_ROOT
from validation.launch_env import hostnames
from validation.slurm_launch import slurm_environment, uses_gloo

TASK = {
    "SLURM_JOB_ID": "1234",
    "SLURM_STEP_ID": "0",
    "SLURM_PROCID": "3",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_STEP_NUM_NODES": "2",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_STEP_NODELIST": "nid[0007-0008]",
    "SLURMD_NODENAME": "nid0008",
}


def test_torch_distributed_variables_come_from_the_task() -> None:
    added = slurm_environment(TASK, "ignored")
    assert added == {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "nid0007",  # rank 0 runs on the step's first node
        "MASTER_PORT": str(15000 + (1234 * 16) % 15000),
    }


def test_what_the_user_set_is_kept() -> None:
    added = slurm_environment(TASK | {"MASTER_PORT": "4000", "RANK": "9"}, "h")
    assert "MASTER_PORT" not in added and "RANK" not in added


def test_outside_an_srun_step_nothing_is_added() -> None:
    batch_shell = {k: v for k, v in TASK.items() if k != "SLURM_STEP_ID"}
    assert slurm_environment(batch_shell, "h") == {}
    assert slurm_environment({}, "h") == {}


def test_gloo_gets_horovods_layout_and_a_rendezvous_beside_the_torch_port() -> None:
    added = slurm_environment(TASK | {"HOROVOD_CONTROLLER": "gloo"}, "h")
    assert added["HOROVOD_RANK"] == "3" and added["HOROVOD_SIZE"] == "4"
    assert added["HOROVOD_LOCAL_RANK"] == "1" and added["HOROVOD_LOCAL_SIZE"] == "2"
    assert added["HOROVOD_CROSS_RANK"] == "1" and added["HOROVOD_CROSS_SIZE"] == "2"
    assert added["HOROVOD_HOSTNAME"] == "nid0008"
    assert added["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "nid0007"
    assert int(added["HOROVOD_GLOO_RENDEZVOUS_PORT"]) == int(added["MASTER_PORT"]) + 1
    assert "HOROVOD_CONTROLLER" not in added  # the user's own value stays


def test_mpi_needs_nothing_and_docker_falls_back_to_gloo() -> None:
    assert not uses_gloo(TASK) and not uses_gloo(TASK | {"HOROVOD_CONTROLLER": "mpi"})
    assert "HOROVOD_RANK" not in slurm_environment(TASK, "h")
    docker = TASK | {"STACKBUILD_RUNTIME": "docker"}
    assert uses_gloo(docker)  # its containers cannot receive Slurm's PMI socket
    assert slurm_environment(docker, "h")["HOROVOD_CONTROLLER"] == "gloo"
    assert not uses_gloo(docker | {"HOROVOD_CONTROLLER": "mpi"})  # asked for: kept


def test_hostlists_expand_as_scontrol_does() -> None:
    assert hostnames("nid[0012-0013,0020],login1") == ["nid0012", "nid0013", "nid0020", "login1"]
    assert hostnames("x[01-02]-ib") == ["x01-ib", "x02-ib"] and hostnames("vm") == ["vm"]


def test_run_as_a_script_it_execs_the_command_with_the_variables() -> None:
    script = PROJECT_ROOT / "validation" / "slurm_launch.py"
    show = "import json, os; print(json.dumps({k: os.environ.get(k) for k in ('RANK', 'PMI_FD')}))"
    env = TASK | {"PATH": "/usr/bin:/bin", "STACKBUILD_RUNTIME": "docker", "PMI_FD": "11"}
    env["HOROVOD_CONTROLLER"] = "mpi"  # no rendezvous server in this test
    out = subprocess.run(
        [sys.executable, str(script), "--", sys.executable, "-c", show],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    # PMI_* is dropped where the runtime cannot pass the socket: MPI_Init must not try it.
    assert json.loads(out) == {"RANK": "3", "PMI_FD": None}
    missing = subprocess.run(
        [sys.executable, str(script), "--", "no-such-program"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert missing.returncode == 127 and "cannot run 'no-such-program'" in missing.stderr
