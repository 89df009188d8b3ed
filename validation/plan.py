"""Plan a validation from what the recipe asked for: pure data, no numpy, no frameworks.

Two products, both from a variant's settings as the render writes them into every image
(`/opt/stackbuild/stackbuild-info.json`, key `expect`): the *stack expectations* (framework
and version, Horovod frameworks/controllers/tensor operations, MPI flavour, oneDNN, CUDA
facts, the instruction set, thresholds) that the stack checks compare with what the image
holds, and the *validation plan* (every job of a `stackbuild validate` pass). stackbuild's
renderer imports this module and nothing else of the harness.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Weak-scaling efficiency (N ranks vs 1) below which validation fails. The published
#: reference is 93.5% at 2 KNL nodes (REFERENCE.md, CosmoFlow); 0.6 leaves room for
#: busier systems. Recipes may set their own (jobs.min_scaling_efficiency).
DEFAULT_MIN_SCALING_EFFICIENCY = 0.6

#: Where every image carries its recipe's expectations.
INFO_FILE = "/opt/stackbuild/stackbuild-info.json"

#: The AVX-512 feature flags (/proc/cpuinfo names) that code compiled with each -march may
#: use: a CPU runs the image only if it has every one. Xeon Phi's ER and PF extensions exist
#: on no other CPU, so a KNL image cannot run on a Skylake or later Xeon either (GCC's -march
#: documentation lists the extensions each value enables).
_SKX = ("avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl")
_ICX = (
    *_SKX,
    "avx512_vnni",
    "avx512ifma",
    "avx512vbmi",
    "avx512_vbmi2",
    "avx512_bitalg",
    "avx512_vpopcntdq",
)
MARCH_AVX512_FLAGS: dict[str, tuple[str, ...]] = {
    "knl": ("avx512f", "avx512cd", "avx512er", "avx512pf"),
    "knm": ("avx512f", "avx512cd", "avx512er", "avx512pf", "avx512_4fmaps", "avx512_4vnniw"),
    "skylake-avx512": _SKX,
    "cascadelake": (*_SKX, "avx512_vnni"),
    "cooperlake": (*_SKX, "avx512_vnni", "avx512_bf16"),
    "icelake-server": _ICX,
    "sapphirerapids": (*_ICX, "avx512_bf16", "avx512_fp16"),
    "x86-64-v4": _SKX,
}
#: -march values whose code needs AVX-512 (Xeon Phi and Xeon Scalable generations).
AVX512_MARCHES = frozenset(MARCH_AVX512_FLAGS)

#: Horovod's names in `horovodrun --check-build`.
CHECK_BUILD_NAMES = {
    "tensorflow": "TensorFlow",
    "pytorch": "PyTorch",
    "mpi": "MPI",
    "gloo": "Gloo",
    "nccl": "NCCL",
}


def stack_expectations(
    settings: Mapping[str, Any], frameworks: list[str], target: str
) -> dict[str, Any]:
    """What an image built from these settings must hold (settings as `Settings.model_dump`)."""
    horovod = settings.get("horovod") or {}
    cuda = settings.get("cuda")
    march = (settings.get("platform") or {}).get("march", "")
    tf = settings.get("tensorflow")
    return {
        "target": target,
        "frameworks": {name: (settings.get(name) or {}).get("version") for name in frameworks},
        "horovod": {
            "version": horovod.get("version"),
            "frameworks": [CHECK_BUILD_NAMES[f] for f in frameworks],
            "controllers": [CHECK_BUILD_NAMES[c] for c in horovod.get("controllers", [])],
            "tensor_operations": [
                CHECK_BUILD_NAMES[o] for o in horovod.get("tensor_operations", [])
            ],
        },
        "mpi_flavor": (settings.get("mpi") or {}).get("flavor", "mpich"),
        "onednn": bool(tf.get("onednn")) if tf else None,
        "cuda": None
        if not cuda
        else {
            "version": cuda["version"],
            "compute_capabilities": list(cuda["compute_capabilities"]),
            "cudnn": cuda["cudnn"],
            "nccl": cuda["nccl"],
            "driver": cuda.get("driver"),
        },
        "march": march,
        "avx512": march in AVX512_MARCHES,
        "min_scaling_efficiency": float(
            (settings.get("jobs") or {}).get(
                "min_scaling_efficiency", DEFAULT_MIN_SCALING_EFFICIENCY
            )
        ),
    }


#: The validation suites and the engines each framework's multi-rank runs use.
PLAN_SUITES = ("cosmoflow", "climate", "gan")
ENGINES = {"pytorch": ("ddp", "horovod"), "tensorflow": ("horovod",)}
#: Which engine a validation pass under each launcher exercises.
LAUNCHER_ENGINES = {"torchrun": "ddp", "horovodrun": "horovod", "srun": "horovod"}


def required_runs(expect: Mapping[str, Any]) -> list[str]:
    """Every training run an image must have passed before it is published, as
    'engine/framework/suite xN' with N 1 or 'many': every suite, one and several ranks,
    every engine the image ships (a GPU image's must include its GPU checks: the report
    of such a run passes only where a GPU was seen)."""
    runs = []
    for framework in expect.get("frameworks") or {}:
        for engine in ENGINES.get(framework, ()):
            for suite in PLAN_SUITES:
                runs += [f"{engine}/{framework}/{suite} x1", f"{engine}/{framework}/{suite} xmany"]
    return runs


def run_name(launcher: str, framework: str, suite: str, ranks: int) -> str:
    """The required_runs name of a training job a report holds."""
    engine = LAUNCHER_ENGINES.get(launcher, launcher) if ranks > 1 else "any"
    return f"{engine}/{framework}/{suite} x{'many' if ranks > 1 else 1}"


def needs_gpu(expect: Mapping[str, Any] | None) -> bool:
    """Whether the image's target is a GPU target: its checks need a GPU to be validated."""
    return bool(expect and expect.get("cuda"))


def needs_avx512(expect: Mapping[str, Any] | None) -> bool:
    """Whether the image's code is compiled for AVX-512 (cannot run on CPUs without it)."""
    return bool(expect and expect.get("avx512"))


def host_has_gpu(device: Path = Path("/dev/nvidiactl")) -> bool:
    """Whether this machine has an NVIDIA driver and device to pass into a container."""
    return device.exists()


def host_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of this machine's CPU (the first `flags` line of /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def missing_cpu_flags(expect: Mapping[str, Any] | None, flags: frozenset[str]) -> list[str]:
    """The AVX-512 extensions the image's -march uses that the CPU with `flags` lacks."""
    if not needs_avx512(expect):
        return []
    march = str((expect or {}).get("march"))
    wanted = MARCH_AVX512_FLAGS.get(march, ("avx512f",))
    return [flag for flag in wanted if flag not in flags]


CONSISTENCY_STEPS = 6
CONSISTENCY_BATCH = 8


@dataclass(frozen=True)
class ValidationRequest:
    """Everything `stackbuild validate` was asked to do."""

    out_dir: Path
    image: str | None = None  # None: native
    suites: tuple[str, ...] = ("cosmoflow", "climate", "gan")
    frameworks: tuple[str, ...] = ("pytorch", "tensorflow")
    ranks: tuple[int, ...] = (1, 2)
    runtime: str = "native"
    launcher: str = "torchrun"
    data_dir: Path | None = None
    size: str = "small"
    seed: int = 1234
    expect_gpu: bool = False
    horovod: dict[str, list[str]] = field(default_factory=dict)  # wanted check-build items
    # The image's stack expectations (stackbuild-info.json `expect`); None: natively, or an
    # image that carries none. They decide GPU checks and AVX-512, not flags.
    expect: dict[str, Any] | None = None
    host_cpu_flags: frozenset[str] = field(default_factory=host_cpu_flags)
    gpu_devices: bool = False  # pass the node's GPUs into the container (there are some)
    python: str = sys.executable
    fault: str = "none"  # inject into every training job (negative controls)
    extra_args: tuple[str, ...] = ()  # passed to every `run` (e.g. --epochs 1 in tests)
    timeout_s: float = 1800  # per job: a job still running then is killed, with its containers
    mpi_flavor: str = "mpich"
    #: on every container this validation starts (validation/runner.py: reap_containers)
    container_label: str = field(default_factory=lambda: f"stackbuild.run={uuid.uuid4().hex}")
    min_scaling_efficiency: float = DEFAULT_MIN_SCALING_EFFICIENCY


@dataclass
class Job:
    """One launched command."""

    tag: str
    kind: str  # probe | train | consistency
    framework: str
    suite: str | None
    ranks: int
    module_args: list[str]
    argv: list[str] = field(default_factory=list)
    returncode: int | None = None
    wall_s: float = 0.0
    log_tail: list[str] = field(default_factory=list)
    skipped: str = ""  # not planned by design (the report says why); verdict skip
    not_run: str = ""  # planned, but this machine cannot run it; verdict not-run


#: Launchers that start one process per rank from outside, where Horovod runs on its MPI
#: controller (srun provides PMI); TensorFlow has no other multi-rank path in the harness.
HOROVOD_MPI_LAUNCHERS = ("srun",)


def multi_rank_sync(request: ValidationRequest, framework: str) -> str | None:
    """How a multi-rank training job exchanges gradients; None: this launcher cannot run it."""
    if request.launcher == "horovodrun":
        return "horovod"
    if framework == "pytorch":
        return "ddp"
    if request.launcher in HOROVOD_MPI_LAUNCHERS:
        return "horovod"
    return None


#: --launcher auto: every gradient-exchange engine the stacks ship, one validation pass each:
#: DDP under torchrun (PyTorch only) and Horovod under horovodrun (both frameworks).
AUTO_PASSES = (("torchrun", ("pytorch",)), ("horovodrun", ("pytorch", "tensorflow")))


def launcher_passes(
    launcher: str, frameworks: tuple[str, ...], ranks: tuple[int, ...], horovod: bool = True
) -> list[tuple[str, tuple[str, ...]]]:
    """(launcher, frameworks) of each validation pass that `--launcher` asks for.

    auto with one rank only, or where the target has no Horovod: a single torchrun pass
    (TensorFlow's multi-rank jobs are then skipped, with the reason)."""
    if launcher != "auto":
        return [(launcher, frameworks)]
    if max(ranks) == 1 or not horovod:
        return [("torchrun", frameworks)]
    passes = []
    for name, supported in AUTO_PASSES:
        chosen = tuple(fw for fw in frameworks if fw in supported)
        if chosen:
            passes.append((name, chosen))
    return passes


def plan_jobs(request: ValidationRequest) -> list[Job]:
    """The probe, training and consistency jobs for a request (nothing runs here).

    A job's module_args say what it runs; `located_args` adds where it writes and how many
    threads each rank uses, which differ between this host and a Slurm job.
    """
    common = ["--config", request.size, "--seed", str(request.seed)]
    jobs = [
        Job(f"probe-{fw}", "probe", fw, None, 1, ["probe", "--framework", fw])
        for fw in request.frameworks
    ]
    cannot_run = ""
    missing = missing_cpu_flags(request.expect, request.host_cpu_flags)
    if missing:
        cannot_run = (
            f"not run: needs AVX-512 (the image is compiled for -march="
            f"{(request.expect or {}).get('march')}) and this machine's CPU lacks "
            + ", ".join(missing)
        )
    for fw in request.frameworks:
        for suite in request.suites:
            for n in request.ranks:
                tag = f"{suite}-{fw}-r{n}"
                args = [
                    "run",
                    "--suite",
                    suite,
                    "--framework",
                    fw,
                    "--tag",
                    tag,
                    "--weak-scaling",
                    "--fault",
                    request.fault,
                    *common,
                    *request.extra_args,
                ]
                sync = multi_rank_sync(request, fw) if n > 1 else None
                if sync:
                    args += ["--sync", sync]
                job = Job(tag, "train", fw, suite, n, args)
                if n > 1 and sync is None:
                    job.skipped = (
                        "TensorFlow multi-rank runs need Horovod "
                        f"(--launcher horovodrun or {', '.join(HOROVOD_MPI_LAUNCHERS)})"
                    )
                job.not_run = cannot_run
                jobs.append(job)
    many = max(request.ranks)
    if "pytorch" in request.frameworks and "cosmoflow" in request.suites and many > 1:
        for n in (1, many):
            args = [
                "run",
                "--suite",
                "cosmoflow",
                "--framework",
                "pytorch",
                "--tag",
                f"consistency-r{n}",
                "--steps",
                str(CONSISTENCY_STEPS),
                "--global-batch",
                str(CONSISTENCY_BATCH),
                "--no-shuffle",
                "--save-params",
                "--dropout",
                "0",
                "--optimizer",
                "sgd",
                "--lr",
                "0.01",
                "--fault",
                request.fault,
                *common,
            ]
            job = Job(f"consistency-r{n}", "consistency", "pytorch", "cosmoflow", n, args)
            job.not_run = cannot_run
            jobs.append(job)
    return jobs


def probe_file(out_dir: Path | str, framework: str) -> str:
    """Where the probe of `framework` writes its JSON."""
    return f"{out_dir}/probe-{framework}.json"


def evaluate_arguments(request: ValidationRequest) -> list[str]:
    """The `evaluate` arguments that check what `plan_jobs(request)` planned (for job scripts)."""
    args = [
        "evaluate",
        "--suite",
        ",".join(request.suites),
        "--framework",
        ",".join(request.frameworks),
        "--ranks",
        ",".join(map(str, request.ranks)),
        "--launcher",
        request.launcher,
        "--runtime",
        request.runtime,
        "--config",
        request.size,
        "--min-scaling-efficiency",
        f"{request.min_scaling_efficiency:g}",
    ]
    if request.image:
        args += ["--image", request.image]
    return args + (["--expect-gpu"] if request.expect_gpu else [])
