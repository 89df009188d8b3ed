"""Rank, world size and thread budget from whichever launcher started this process."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# (rank, world size, local rank, local world size) variables, in order of preference.
_LAUNCHER_VARS = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),  # torchrun
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),  # Open MPI mpirun / horovodrun
    # MPICH hydra; `srun --mpi=pmi2` sets PMI_RANK/PMI_SIZE too, but no local variables.
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
    ("HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE"),  # --gloo
)

#: What srun sets in each task that the harness reads; a container must receive these.
#: SLURM_STEP_ID tells an srun task from the batch shell, which has SLURM_PROCID=0 and the
#: job's SLURM_NTASKS but is a single process.
SLURM_TASK_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_STEP_ID",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_STEP_NUM_TASKS",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_STEP_NODELIST",
    "SLURM_JOB_NODELIST",
)

DEFAULT_MASTER_PORT = 29511


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    source: str


def _slurm_task(env: Mapping[str, str]) -> tuple[int, int, int, int] | None:
    """(rank, world, local rank, local world) of an srun task; None outside srun steps."""
    if "SLURM_STEP_ID" not in env or "SLURM_PROCID" not in env:
        return None
    world = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or 1)
    rank = int(env["SLURM_PROCID"])
    local_rank = int(env.get("SLURM_LOCALID", rank))
    # Not SLURM_NTASKS_PER_NODE: that is the job's value, also inside an `srun -n1` step.
    per_node = tasks_per_node(env.get("SLURM_STEP_TASKS_PER_NODE", ""))
    node = int(env.get("SLURM_NODEID", 0))
    local_world = per_node[node] if node < len(per_node) else world
    return rank, world, local_rank, local_world


def tasks_per_node(spec: str) -> list[int]:
    """Expand Slurm's tasks-per-node list: "2(x3),1" -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in filter(None, spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not match:
            return []
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def rank_info(env: Mapping[str, str] | None = None) -> RankInfo:
    """Read the launcher's variables; a plain process is rank 0 of 1."""
    env = os.environ if env is None else env
    slurm = _slurm_task(env)
    for rank_var, size_var, local_var, local_size_var in _LAUNCHER_VARS:
        if rank_var in env and size_var in env:
            rank, world = int(env[rank_var]), int(env[size_var])
            if local_var in env:
                local_rank = int(env[local_var])
                local_world = int(env.get(local_size_var, world))
            elif slurm is not None and slurm[:2] == (rank, world):
                local_rank, local_world = slurm[2], slurm[3]  # srun --mpi=pmi2
            else:
                local_rank, local_world = rank, world
            return RankInfo(rank, world, local_rank, local_world, rank_var)
    if slurm is not None:
        return RankInfo(*slurm, source="SLURM_PROCID")
    return RankInfo(0, 1, 0, 1, "none")


def threads_per_rank(local_world_size: int, cores: int | None = None) -> int:
    """Cores shared evenly by the ranks on a node, so ranks don't oversubscribe cores."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // max(1, local_world_size))


#: A rank's index on its node, from whichever launcher started it (horovodrun with Gloo sets
#: only the HOROVOD_* variables).
LOCAL_RANK_VARIABLES = (
    "LOCAL_RANK",
    "HOROVOD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "SLURM_LOCALID",
)


def rank_cores(threads: int, local_rank: int, cores: Sequence[int]) -> list[int] | None:
    """The `threads` cores that local rank `local_rank` gets out of `cores` (disjoint per
    rank, in order); None where the process may not use more than its share anyway (a
    launcher bound it, as `srun --cpu-bind=cores` does) or the share falls outside `cores`."""
    if threads < 1 or len(cores) <= threads:
        return None
    start = local_rank * threads
    if start + threads > len(cores):
        return None
    return sorted(cores)[start : start + threads]


def bind_to_rank_cores(threads: int, env: Mapping[str, str] | None = None) -> list[int] | None:
    """Pin every thread of this process to its rank's cores (see `rank_cores`).

    Weak scaling compares a 1-rank run with an N-rank run at the same threads per rank;
    unbound, the single rank's helper threads (data, collectives, the runtime's own pools)
    spread over the cores the other ranks would use, and its rate is not one rank's rate.
    Returns the cores, or None where nothing was changed.
    """
    env = os.environ if env is None else env
    local = next((int(env[v]) for v in LOCAL_RANK_VARIABLES if env.get(v, "").isdigit()), 0)
    share = rank_cores(threads, local, sorted(os.sched_getaffinity(0)))
    if share is None:
        return None
    for task in os.listdir("/proc/self/task"):  # threads started before this call, too
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), share)
    return share


#: --comm-priority values: auto demotes where compute threads fill the rank's cores.
COMM_PRIORITIES = ("auto", "idle", "normal")


def idle_comm_wanted(
    policy: str, threads: int, gpu: bool = False, cores: int | None = None
) -> bool:
    """Whether a rank running `threads` compute threads should demote its communication
    engine's background threads (see `idle_priority_threads`).

    auto: yes where the compute threads fill every core this process may run on (the
    harness binds each rank to `threads` cores), so those background threads would take
    turns with the compute threads on a busy core; no where a core is left over for them,
    and no on GPU ranks (the compute runs on the GPU; NCCL's watchdog stays as it is).
    `cores`: how many this process may use (default: its affinity).
    """
    if policy not in COMM_PRIORITIES:
        raise ValueError(f"unknown comm priority {policy!r}; expected {', '.join(COMM_PRIORITIES)}")
    if policy != "auto":
        return policy == "idle"
    return not gpu and threads >= (cores or len(os.sched_getaffinity(0)))


@contextlib.contextmanager
def idle_priority_threads(enabled: bool) -> Iterator[list[str]]:
    """Run the threads started inside the block at SCHED_IDLE; yields their names once done.

    Wrap the call that starts a communication engine (hvd.init, init_process_group). Its
    background threads poll: Horovod's runs a cross-rank coordination round every cycle
    (1 ms) and MPICH/UCX spin while they wait for the peer. On a core that a compute thread
    also needs, each poll costs compute time (measured here: a 9.7 ms TensorFlow step took
    15 ms with only hvd.init() added). At SCHED_IDLE they run whenever the compute thread
    waits, which is when their results are needed: at the gradient exchange.
    """
    before = set(os.listdir("/proc/self/task"))
    demoted: list[str] = []
    yield demoted
    if not enabled:
        return
    for task in sorted(set(os.listdir("/proc/self/task")) - before, key=int):
        with contextlib.suppress(OSError):  # a thread may have ended meanwhile
            os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))
            with open(f"/proc/self/task/{task}/comm", encoding="utf-8") as comm:
                demoted.append(comm.read().strip())


def first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist ("nid[0012-0015,0020],login1" -> "nid0012").

    Rank 0 of a step runs there; this is what `scontrol show hostnames | head -n1` prints,
    computed without scontrol, which images do not have.
    """
    depth, end = 0, len(nodelist)
    for i, char in enumerate(nodelist):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            end = i
            break
    return re.sub(
        r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m.group(1))[0], nodelist[:end].strip()
    )


def hostnames(nodelist: str) -> list[str]:
    """Expand a Slurm hostlist ("nid[0012-0013,0020],login1" -> four names), as
    `scontrol show hostnames` does, zero-padding kept (one bracket group per name)."""
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", nodelist):
        match = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part.strip())
        if not match:
            names.append(part.strip())
            continue
        head, ranges, tail = match.groups()
        for item in ranges.split(","):
            low, _, high = item.partition("-")
            for number in range(int(low), int(high or low) + 1):
                names.append(f"{head}{number:0{len(low)}d}{tail}")
    return names


def slurm_master_port(env: Mapping[str, str]) -> int | None:
    """A port in 15000-29999 derived from job and step ids (steps may share a node)."""
    try:
        job, step = int(env["SLURM_JOB_ID"]), int(env.get("SLURM_STEP_ID", 0))
    except (KeyError, ValueError):
        return None
    return 15000 + (job * 16 + step) % 15000


def export_rendezvous(info: RankInfo, env: dict[str, str] | None = None) -> None:
    """Set RANK/WORLD_SIZE/MASTER_* so torch's env:// rendezvous works under any launcher.

    Under srun, MASTER_ADDR is the first host of the step (where rank 0 runs) and
    MASTER_PORT comes from the job and step ids; variables already set are kept.
    """
    env = os.environ if env is None else env  # type: ignore[assignment]
    env.setdefault("RANK", str(info.rank))
    env.setdefault("WORLD_SIZE", str(info.world_size))
    env.setdefault("LOCAL_RANK", str(info.local_rank))
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if "SLURM_STEP_ID" in env and nodelist:
        env.setdefault("MASTER_ADDR", first_host(nodelist))
        env.setdefault("MASTER_PORT", str(slurm_master_port(env) or DEFAULT_MASTER_PORT))
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", str(DEFAULT_MASTER_PORT))


def horovod_on_mpi(hvd: Any) -> bool:
    """Whether this rank's Horovod (horovod.torch or horovod.tensorflow) runs on MPI with
    peers: such a rank ends without MPI_Finalize (validation.cli.exit_without_mpi_finalize)."""
    return bool(hvd.is_initialized() and hvd.mpi_enabled() and hvd.size() > 1)
