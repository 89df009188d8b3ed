"""Command lines for (runtime x launcher): pure functions, so every combination is testable.

Rule: torchrun and horovodrun start the ranks *inside* one container; srun and mpirun start
one container per rank from *outside* (the HPC pattern: `srun shifter ...`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from validation.launch_env import SLURM_TASK_VARIABLES
from validation.runtimes import RUNTIMES as CONTAINER_RUNTIMES
from validation.runtimes import container_argv, host_env, pmi_fd_prefix

#: "native" runs this machine's Python; the others are rows of validation/runtimes.py.
RUNTIMES = ("native", *CONTAINER_RUNTIMES)
LAUNCHERS = ("none", "torchrun", "mpirun", "srun", "horovodrun")
INSIDE_LAUNCHERS = ("torchrun", "horovodrun")
#: srun's PMI plugin for each MPI flavour in images (MPICH's PMI-1/2 client, Open MPI's PMIx).
SRUN_MPI_PLUGINS = {"mpich": "pmi2", "openmpi": "pmix"}
#: Variables that mpirun/srun set outside a container and the harness reads inside it.
OUTSIDE_RANK_VARIABLES = (
    "PMI_RANK",
    "PMI_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    *SLURM_TASK_VARIABLES,
)
CONTAINER_OUT = "/validation/out"
CONTAINER_DATA = "/validation/data"


@dataclass(frozen=True)
class LaunchPlan:
    """How to start `ranks` copies of `python -m validation ...`."""

    runtime: str = "native"
    launcher: str = "none"
    ranks: int = 1
    image: str | None = None
    python: str = "python"
    mounts: tuple[tuple[str, str], ...] = ()  # (host path, container path)
    env: Mapping[str, str] = field(default_factory=dict)
    gpu: bool = False
    master_port: int = 29511
    mpi_flavor: str = "mpich"  # mpich | openmpi: how mpirun passes variables
    #: KEY=VALUE on every container of the run (podman, docker, podman-hpc): what a killed
    #: launcher leaves behind is found by it (validation/runner.py: reap_containers)
    container_label: str = ""

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {self.runtime!r}; expected {', '.join(RUNTIMES)}")
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"unknown launcher {self.launcher!r}; expected {', '.join(LAUNCHERS)}")
        if self.runtime != "native" and not self.image:
            raise ValueError(f"runtime {self.runtime} needs an image")
        if self.ranks > 1 and self.launcher == "none":
            raise ValueError(f"{self.ranks} ranks need a launcher (torchrun, mpirun, srun, ...)")


def _launcher_prefix(plan: LaunchPlan, inside: bool) -> list[str]:
    n = str(plan.ranks)
    if plan.launcher == "torchrun":
        # Natively, run torch's launcher with the chosen interpreter (venvs are rarely on PATH).
        head = (
            ["torchrun"]
            if inside and plan.runtime != "native"
            else [plan.python, "-m", "torch.distributed.run"]
        )
        return [*head, "--standalone", f"--nproc-per-node={n}", "--no-python"]
    if plan.launcher == "horovodrun":
        head = (
            ["horovodrun"]
            if inside and plan.runtime != "native"
            else [plan.python, "-m", "horovod.runner.launch"]  # what horovodrun runs
        )
        return [*head, "-np", n, "-H", f"localhost:{n}"]
    if plan.launcher == "srun":
        mpi = f"--mpi={SRUN_MPI_PLUGINS[plan.mpi_flavor]}"  # PMI for MPI_Init (Horovod)
        return ["srun", f"--ntasks={n}", mpi, "--kill-on-bad-exit=1"]
    if plan.launcher == "mpirun":
        argv = ["mpirun", "-np", n]
        for key, value in sorted(_rendezvous_env(plan).items()):
            argv += ["-x", key] if plan.mpi_flavor == "openmpi" else ["-genv", key, value]
        return argv
    return []


def _rendezvous_env(plan: LaunchPlan) -> dict[str, str]:
    env = dict(plan.env)
    # Under srun the harness takes MASTER_ADDR (first host of the step) and MASTER_PORT
    # from Slurm's variables (launch_env.export_rendezvous); mpirun here runs on one host.
    if plan.launcher == "mpirun" and plan.ranks > 1:
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(plan.master_port))
    return env


def _container_prefix(plan: LaunchPlan, mpi_outside: bool) -> list[str]:
    """The runtime's words up to the image (validation/runtimes.py says how each runs one)."""
    env = _rendezvous_env(plan)
    shim, fds = pmi_fd_prefix(plan.runtime) if plan.launcher == "srun" else ([], 0)
    # mpirun/srun set rank variables outside; they are passed through to the container.
    argv = shim + container_argv(
        plan.runtime,
        str(plan.image),
        gpu=plan.gpu,
        mpi=mpi_outside,
        mounts=plan.mounts,
        env=env,
        pass_env=OUTSIDE_RANK_VARIABLES if mpi_outside else (),
        preserve_fds=fds,
        mpi_flavor=plan.mpi_flavor,
        label=plan.container_label,
    )
    outside = host_env(plan.runtime, env)  # Shifter: env goes on the host side
    return ["env", *[f"{k}={v}" for k, v in sorted(outside.items())], *argv] if outside else argv


def build_command(plan: LaunchPlan, module_args: Sequence[str]) -> list[str]:
    """The full argv that starts `plan.ranks` ranks of `python -m validation <module_args>`."""
    python = plan.python if plan.runtime == "native" else "python"
    inner = [python, "-m", "validation", *module_args]
    if plan.runtime == "native":
        return [*_launcher_prefix(plan, inside=False), *inner]
    inside = plan.launcher in INSIDE_LAUNCHERS or plan.launcher == "none"
    if inside:
        return [*_container_prefix(plan, mpi_outside=False), *_launcher_prefix(plan, True), *inner]
    return [*_launcher_prefix(plan, False), *_container_prefix(plan, mpi_outside=True), *inner]


def native_env(plan: LaunchPlan) -> dict[str, str]:
    """Variables a native launch needs in its environment (rendezvous + thread limits)."""
    return _rendezvous_env(plan)
