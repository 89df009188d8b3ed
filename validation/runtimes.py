"""How each container runtime runs an image: the one table that the harness's launch code,
the module wrappers and the Slurm job scripts all read (stdlib only: the builder imports it).

A row says which program must be on the node, the argv up to the image, and the syntax of
GPU, MPI, volume and environment options. `container_argv` turns a row into the words before
the image; the wrappers and job scripts are rendered from the same words, so the three
cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Runtime:
    """One container runtime, as the node runs it."""

    name: str
    label: str
    program: str  # must be on PATH where the image runs
    run: tuple[str, ...]  # argv up to the options
    host: tuple[str, ...] = ()  # share the node's network, IPC and PIDs (MPI, NCCL, shm)
    #: host options only where the MPI options (which bring their own) are not given
    host_without_mpi: tuple[str, ...] = ()
    gpu: tuple[str, ...] = ()
    #: options for one rank of an srun MPI job, per MPI flavour (the runtime's own support)
    mpi: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    volume: str = "--volume={src}:{dst}"
    env_set: str | None = "--env={name}={value}"  # None: set on the host (env passes in)
    #: pass one host variable in by name; None where the host environment passes in anyway
    env_pass: str | None = "--env={name}"
    workdir: str | None = "--workdir={dir}"
    interactive: tuple[str, ...] = ()  # keep stdin open (wrappers, Jupyter kernels)
    #: podman keeps file descriptors for its child: Slurm's PMI socket goes in this way
    #: (renumbered to 3); None where the container is not the caller's child (Docker)
    preserve_fds: str | None = None
    end_of_options: tuple[str, ...] = ()  # between the image and the command
    image_option: str | None = None  # the image as an option ("--image={image}"), not last
    #: site modules (Shifter's --module=mpich,gpu): the recipe's list, plus gpu_module on GPUs
    module_option: str | None = None
    gpu_module: str | None = None
    image_form: str = "ref"  # ref | docker-prefixed (Shifter) | sif (Apptainer)
    #: whether the image reference can name a digest (repo@sha256:...): a rebuild can then
    #: never move what runs; the others get an immutable per-digest tag (see `publish`)
    pins_digest: bool = True
    #: how to check at start that a local tag still names the validated image (None: cannot)
    inspect_id: tuple[str, ...] | None = None
    #: whether Slurm's PMI reaches the container; False: under srun, Horovod uses Gloo
    #: (validation/slurm_launch.py) and MPI_Init must not try
    pmi: bool = True
    module_hint: str = ""
    #: mark a container so that what a killed launcher leaves running can be found and
    #: removed (`reap_argv`); None where no engine keeps containers apart from the caller
    label_option: str | None = None

    def reap_argv(self, label: str) -> tuple[list[str], list[str]] | None:
        """(list the containers with `label`, remove them: ids follow), or None."""
        if not self.label_option:
            return None
        return [self.program, "ps", "-aq", "--filter", f"label={label}"], [
            self.program,
            "rm",
            "-f",
        ]

    def image_argument(self, reference: str) -> str:
        """How this runtime names the image: docker:REF for Shifter; as given otherwise (for
        Apptainer, the caller gives the SIF file)."""
        if self.image_form == "docker-prefixed":
            return reference if reference.startswith("docker:") else f"docker:{reference}"
        return reference


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime(
            name="podman",
            label="Podman",
            program="podman",
            run=("podman", "run", "--rm"),
            host=("--network=host", "--ipc=host", "--pid=host"),
            gpu=("--device=nvidia.com/gpu=all",),
            interactive=("-i",),
            preserve_fds="--preserve-fds={count}",
            inspect_id=("podman", "image", "inspect", "--format", "{{.Id}}"),
            label_option="--label={label}",
            module_hint="install podman (Debian: apt-get install podman) or load its module",
        ),
        Runtime(
            name="docker",
            label="Docker",
            program="docker",
            run=("docker", "run", "--rm"),
            host=("--network=host", "--ipc=host", "--pid=host"),
            gpu=("--gpus=all",),
            interactive=("-i",),
            # The container is dockerd's child, not the caller's: no file descriptor (and so
            # no Slurm PMI socket) reaches it. Under srun, ranks use Gloo (slurm_launch).
            pmi=False,
            inspect_id=("docker", "image", "inspect", "--format", "{{.Id}}"),
            label_option="--label={label}",
            module_hint="start the Docker engine (scripts/setup.d/30-docker.sh) or use podman",
        ),
        Runtime(
            name="podman-hpc",
            label="podman-hpc",
            program="podman-hpc",
            run=("podman-hpc", "run", "--rm"),
            # (): --mpi (the site's mpich module) brings --network/--ipc/--pid=host, and
            # podman 4.3 refuses a second --network=host ("cannot set multiple networks").
            host=(),
            host_without_mpi=("--network=host",),  # kernels, single processes: loopback ports
            gpu=("--gpu",),
            # its mpich module: site MPICH, host IPC/PID, PMI passed in; Open MPI: PMIx
            mpi={"mpich": ("--mpi",), "openmpi": ("--openmpi-pmix",)},
            interactive=("-i",),
            # None: podman-hpc itself dups $PMI_FD to fd 3 and gives `podman exec`
            # --preserve-fds 1; with --mpi an extra --preserve-fds also reaches the node's
            # shared `podman run -d` (started without fd 3), which then fails to start.
            preserve_fds=None,
            # env -u PMI_FD: under `srun --mpi=pmi2` podman-hpc adds --preserve-fds to every
            # podman command (pmi_fd() in podman_hpc.py), which `image inspect` refuses.
            inspect_id=(
                "env",
                "-u",
                "PMI_FD",
                "podman-hpc",
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
            ),
            label_option="--label={label}",
            module_hint="load the module that provides podman-hpc (e.g. module load podman-hpc)",
        ),
        Runtime(
            name="shifter",
            label="Shifter",
            program="shifter",
            run=("shifter",),
            module_option="--module={modules}",
            gpu_module="gpu",
            volume="--volume={src}:{dst}",
            env_set=None,  # the host environment passes in (except LD_*)
            env_pass=None,
            workdir=None,  # Shifter starts in the caller's working directory
            end_of_options=("--",),
            image_option="--image={image}",
            image_form="docker-prefixed",
            pins_digest=False,  # shifterimg pulls by tag: an immutable tag stands in
            module_hint="Shifter is part of the node's OS at Shifter sites; run on a compute "
            "node of such a site (or pick another runtime with stackbuild render --runtime)",
        ),
        Runtime(
            name="apptainer",
            label="Apptainer",
            program="apptainer",
            run=("apptainer", "exec"),
            gpu=("--nv",),
            volume="--bind={src}:{dst}",
            env_set="--env={name}={value}",
            env_pass=None,  # Apptainer passes the host environment in
            workdir="--pwd={dir}",
            image_form="sif",
            pins_digest=False,  # a SIF file: its name carries the immutable tag
            module_hint="load the apptainer module (e.g. module load apptainer)",
        ),
    )
}

#: Host variables a rank needs inside the container: Slurm's task layout, PMI, rendezvous,
#: thread and device settings. Shell patterns (the wrappers match them with `case`).
PASS_ENV_PATTERNS = (
    "SLURM*",  # SLURM_* and SLURMD_NODENAME
    "PMI_*",
    "PMIX_*",
    "OMPI_*",
    "HOROVOD_*",
    "NCCL_*",
    "OMP_*",
    "KMP_*",
    "MKL_*",
    "CUDA_VISIBLE_DEVICES",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "STACKBUILD_*",
)

#: The launcher that wrappers put in front of the command in srun steps (validation is on
#: every image's PYTHONPATH; the script form also works where the image's ENV is not applied).
SLURM_LAUNCH = ("python", "/opt/stackbuild/validation/slurm_launch.py", "--")


#: Run in each srun task before a runtime whose container is its child: Slurm's PMI socket
#: (PMI_FD, a different number in each task) becomes fd 3, which --preserve-fds=1 passes in.
#: Without PMI (srun --mpi=none) fd 3 is /dev/null, so the same container options work.
PMI_FD_TO_3 = (
    'if [ -n "${PMI_FD:-}" ]; then exec 3<&"$PMI_FD"; export PMI_FD=3; else exec 3</dev/null; fi'
)
PMI_FD_SHIM = PMI_FD_TO_3 + '; exec "$@"'


def pmi_fd_prefix(runtime: str) -> tuple[list[str], int]:
    """(words before the runtime's argv, fds to preserve) for one srun task of an MPI job."""
    if get_runtime(runtime).preserve_fds is None:
        return [], 0
    return ["bash", "-c", PMI_FD_SHIM, "pmi-fd"], 1


def get_runtime(name: str) -> Runtime:
    """The row for a runtime name, or a ValueError listing the known ones."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; expected {', '.join(RUNTIMES)}") from None


def container_argv(runtime: str, image: str, **options: Any) -> list[str]:
    """The words that start `image` with `runtime`, up to the command: `runtime_options`
    (which takes the same keyword options) and then `image_words`."""
    return [*runtime_options(runtime, image, **options), *image_words(runtime, image)]


def runtime_options(
    runtime: str,
    image: str,
    *,
    gpu: bool = False,
    mpi: bool | None = False,
    mounts: Sequence[tuple[str, str]] = (),
    env: Mapping[str, str] | None = None,
    pass_env: Sequence[str] = (),
    workdir: str | None = None,
    interactive: bool = False,
    preserve_fds: int = 0,
    site_modules: Sequence[str] = (),
    mpi_flavor: str = "mpich",
    label: str = "",
) -> list[str]:
    """The runtime's words before the image (`image_words`), so more options may follow.

    mpi: True, the row's MPI options; False, its host options for a process without them;
    None, neither (the caller adds one or the other: the wrappers decide under srun).
    env: variables set to values; pass_env: host variables passed by name (ignored where the
    host environment passes in). Variables a runtime cannot set (Shifter) are the caller's
    to put on the host side (`host_env`). site_modules: the recipe's Shifter modules.
    """
    row = get_runtime(runtime)
    argv = list(row.run)
    if row.image_option:
        argv.append(row.image_option.format(image=row.image_argument(image)))
    modules = list(site_modules)
    if gpu and row.gpu_module and row.gpu_module not in modules:
        modules.append(row.gpu_module)
    if row.module_option and modules:
        argv.append(row.module_option.format(modules=",".join(modules)))
    argv += row.interactive if interactive else []
    if label and row.label_option:
        argv.append(row.label_option.format(label=label))
    argv += list(row.host)
    argv += list(row.gpu) if gpu else []
    if mpi is not None:
        mpi_options = list(row.mpi.get(mpi_flavor, ())) if mpi else []
        argv += mpi_options or list(row.host_without_mpi)
    if preserve_fds and row.preserve_fds:
        argv.append(row.preserve_fds.format(count=preserve_fds))
    if workdir and row.workdir:
        argv.append(row.workdir.format(dir=workdir))
    argv += [row.volume.format(src=src, dst=dst) for src, dst in mounts]
    if row.env_set:
        argv += [row.env_set.format(name=k, value=v) for k, v in sorted((env or {}).items())]
    if row.env_pass:
        argv += [row.env_pass.format(name=name) for name in pass_env]
    return argv


def image_words(runtime: str, image: str) -> list[str]:
    """The words between the options and the command: the image (unless it is an option)."""
    row = get_runtime(runtime)
    return [*([] if row.image_option else [row.image_argument(image)]), *row.end_of_options]


def host_env(runtime: str, env: Mapping[str, str]) -> dict[str, str]:
    """Variables that must be set on the host side because the runtime cannot set them."""
    return {} if get_runtime(runtime).env_set else dict(env)
