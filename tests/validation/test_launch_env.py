"""Rank detection and rendezvous under each launcher; srun variables as srun sets them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from validation.launch_env import (
    LOCAL_RANK_VARIABLES,
    export_rendezvous,
    first_host,
    idle_comm_wanted,
    idle_priority_threads,
    rank_cores,
    rank_info,
    slurm_master_port,
    tasks_per_node,
)

#: What `srun --nodes=2 --ntasks=4` sets in its third task (node 1, local rank 0) while the
#: job was submitted with --ntasks-per-node=4 (SLURM_NTASKS_PER_NODE is the job's value).
SRUN_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_ID": "3",
    "SLURM_PROCID": "2",
    "SLURM_NTASKS": "4",
    "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "1",
    "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
    "SLURM_STEP_NODELIST": "nid[001017-001018]",
    "SLURM_JOB_NODELIST": "nid[001017-001018]",
    "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.9",
}
PMI2 = {"PMI_RANK": "2", "PMI_SIZE": "4", "PMI_FD": "13"}  # srun --mpi=pmi2 adds these


def test_srun_task_takes_rank_and_local_sizes_from_the_step() -> None:
    info = rank_info(SRUN_TASK)
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (2, 4, 0, 2)


def test_srun_with_pmi2_keeps_slurm_local_rank_instead_of_the_global_one() -> None:
    info = rank_info(SRUN_TASK | PMI2)
    assert info.source == "PMI_RANK"
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (2, 4, 0, 2)


def test_one_rank_step_in_a_bigger_job_is_a_single_rank_owning_its_node() -> None:
    env = SRUN_TASK | {
        "SLURM_PROCID": "0",
        "SLURM_NTASKS": "1",
        "SLURM_STEP_NUM_TASKS": "1",
        "SLURM_NODEID": "0",
        "SLURM_STEP_TASKS_PER_NODE": "1",
    }
    info = rank_info(env)
    assert (info.rank, info.world_size, info.local_world_size) == (0, 1, 1)


def test_the_batch_shell_is_not_a_rank_of_the_job() -> None:
    # sbatch sets SLURM_PROCID=0 and the job's SLURM_NTASKS in the script, outside any step.
    env = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"}
    assert rank_info(env).world_size == 1


def test_torchrun_inside_an_allocation_wins_over_slurm() -> None:
    env = SRUN_TASK | {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    info = rank_info(env)
    assert (info.rank, info.world_size, info.local_rank, info.source) == (5, 8, 1, "RANK")


@pytest.mark.parametrize(
    ("spec", "counts"),
    [("2", [2]), ("2(x3),1", [2, 2, 2, 1]), ("4,3(x2)", [4, 3, 3]), ("", []), ("x", [])],
)
def test_tasks_per_node_expands_slurm_lists(spec: str, counts: list[int]) -> None:
    assert tasks_per_node(spec) == counts


@pytest.mark.parametrize(
    ("nodelist", "host"),
    [
        ("vm", "vm"),
        ("nid[001017-001018]", "nid001017"),
        ("nid[0012-0015,0020],login1", "nid0012"),
        ("login1,nid[3-4]", "login1"),
        ("rack[2,4]-node[07-09]", "rack2-node07"),
    ],
)
def test_first_host_matches_scontrol_show_hostnames(nodelist: str, host: str) -> None:
    assert first_host(nodelist) == host


def test_rendezvous_under_srun_points_at_the_first_host_with_a_per_step_port() -> None:
    env = dict(SRUN_TASK)
    export_rendezvous(rank_info(env), env)
    assert env["MASTER_ADDR"] == "nid001017"  # not the launch node's address
    assert env["MASTER_PORT"] == str(slurm_master_port(SRUN_TASK))
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("2", "4", "0")
    assert 15000 <= int(env["MASTER_PORT"]) < 30000  # below the ephemeral range
    next_step = SRUN_TASK | {"SLURM_STEP_ID": "4"}
    assert slurm_master_port(next_step) != slurm_master_port(SRUN_TASK)


def test_rendezvous_keeps_what_the_user_set_and_defaults_to_loopback() -> None:
    env = SRUN_TASK | {"MASTER_ADDR": "10.1.1.1", "MASTER_PORT": "1234"}
    export_rendezvous(rank_info(env), env)
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("10.1.1.1", "1234")
    plain: dict[str, str] = {}
    export_rendezvous(rank_info(plain), plain)
    assert (plain["MASTER_ADDR"], plain["RANK"]) == ("127.0.0.1", "0")


def test_ranks_get_disjoint_core_shares_unless_a_launcher_bound_them() -> None:
    cores = [0, 1, 2, 3, 4, 5, 6, 7]
    assert rank_cores(4, 0, cores) == [0, 1, 2, 3]
    assert rank_cores(4, 1, cores) == [4, 5, 6, 7]
    assert rank_cores(2, 0, [6, 2, 4, 0]) == [0, 2]
    assert rank_cores(4, 2, cores) is None  # more ranks than shares: leave it to the system
    assert rank_cores(2, 0, [3, 5]) is None  # already its own cores (srun --cpu-bind)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to pin to")
@pytest.mark.parametrize(
    ("variable", "local_rank"), [("LOCAL_RANK", 1), ("HOROVOD_LOCAL_RANK", 1), (None, 0)]
)
def test_binding_pins_every_thread_of_the_process_to_its_rank_cores(
    variable: str | None, local_rank: int
) -> None:
    cores = sorted(os.sched_getaffinity(0))
    # A thread started before the binding must move too (numpy, the frameworks' pools).
    probe = (
        "import os, threading, time\n"
        "from validation.launch_env import bind_to_rank_cores\n"
        "ev = threading.Event(); seen = {}\n"
        "def early():\n"
        "    ev.wait(); seen['early'] = sorted(os.sched_getaffinity(0))\n"
        "t = threading.Thread(target=early); t.start(); time.sleep(0.1)\n"
        "share = bind_to_rank_cores(1)\n"
        "ev.set(); t.join()\n"
        "print(share, sorted(os.sched_getaffinity(0)), seen['early'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_RANK_VARIABLES}
    if variable:
        env[variable] = str(local_rank)
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("] ")
    want = [cores[local_rank]]
    assert [o.strip().strip("[]") for o in out] == [str(want[0])] * 3


def test_horovodrun_gloo_ranks_are_read_from_horovod_variables() -> None:
    env = {"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1"}
    info = rank_info({**env, "HOROVOD_LOCAL_SIZE": "2"})
    assert (info.rank, info.world_size, info.local_rank, info.local_world_size) == (1, 2, 1, 2)


def test_comm_threads_go_idle_only_where_compute_threads_fill_the_cores() -> None:
    assert idle_comm_wanted("auto", threads=1, cores=1)
    assert idle_comm_wanted("auto", threads=4, cores=4)
    assert not idle_comm_wanted("auto", threads=3, cores=4)  # a core is left for them
    assert not idle_comm_wanted("auto", threads=4, gpu=True, cores=4)  # compute on the GPU
    assert idle_comm_wanted("idle", threads=1, cores=8)
    assert not idle_comm_wanted("normal", threads=4, cores=4)
    with pytest.raises(ValueError, match="unknown comm priority"):
        idle_comm_wanted("low", threads=1, cores=1)


def _policy(thread: threading.Thread) -> int:
    assert thread.native_id is not None
    return os.sched_getscheduler(thread.native_id)


@pytest.mark.parametrize("enabled", [True, False])
def test_threads_started_inside_the_block_run_at_idle_priority(enabled: bool) -> None:
    release = threading.Event()
    before = threading.Thread(target=release.wait, name="compute")
    before.start()
    started = threading.Thread(target=release.wait)
    try:
        with idle_priority_threads(enabled) as demoted:
            started.start()
        assert _policy(before) == os.SCHED_OTHER
        assert _policy(started) == (os.SCHED_IDLE if enabled else os.SCHED_OTHER)
        assert len(demoted) == (1 if enabled else 0)  # named as the process is (comm)
    finally:
        release.set()
        before.join()
        started.join()
