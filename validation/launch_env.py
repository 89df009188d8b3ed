"""Rank, world size and thread budget from whichever launcher started this process."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# (rank, world size, local rank, local world size) variables, in order of preference.
_LAUNCHER_VARS = (
    ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"),  # torchrun
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
    ),  # Open MPI mpirun / horovodrun
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH hydra
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),  # srun
)


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    source: str


def rank_info(env: Mapping[str, str] | None = None) -> RankInfo:
    """Read the launcher's variables; a plain process is rank 0 of 1."""
    env = os.environ if env is None else env
    for rank_var, size_var, local_var, local_size_var in _LAUNCHER_VARS:
        if rank_var in env and size_var in env:
            world = int(env[size_var])
            local_size = env.get(local_size_var, str(world)).split("(")[0].split(",")[0]
            return RankInfo(
                rank=int(env[rank_var]),
                world_size=world,
                local_rank=int(env.get(local_var, env[rank_var])),
                local_world_size=int(local_size or world),
                source=rank_var,
            )
    return RankInfo(0, 1, 0, 1, "none")


def threads_per_rank(local_world_size: int, cores: int | None = None) -> int:
    """Cores shared evenly by the ranks on a node, so ranks don't oversubscribe cores."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // max(1, local_world_size))


def export_rendezvous(info: RankInfo, env: dict[str, str] | None = None) -> None:
    """Set RANK/WORLD_SIZE/MASTER_* so torch's env:// rendezvous works under any launcher."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    env.setdefault("RANK", str(info.rank))
    env.setdefault("WORLD_SIZE", str(info.world_size))
    env.setdefault("LOCAL_RANK", str(info.local_rank))
    env.setdefault("MASTER_ADDR", env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
    env.setdefault("MASTER_PORT", "29511")
