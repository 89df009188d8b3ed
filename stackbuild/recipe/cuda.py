"""A GPU variant's CUDA facts against the framework wheels it names, checked at load time.

The recipe's `cuda` block says what the image gets (CUDA userspace, cuDNN, NCCL, compute
capabilities, the oldest driver); the framework wheels decide what it really gets. A recipe
that says CUDA 12.8 while its torch wheel is a CUDA 13.0 build cannot be built as described,
so it fails here, with both values and what would work, before anything renders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from stackbuild.errors import RecipeError
from stackbuild.recipe.schema import Settings
from stackbuild.recipe.yamlsource import KeyPath


@dataclass(frozen=True)
class WheelCuda:
    """What one framework release's Linux wheels on PyPI are built for."""

    cuda: str  # major.minor the wheels' CUDA userspace must match (major only: any minor)
    compute_capabilities: tuple[str, ...]  # compiled kernels (sm_XY)
    ptx: tuple[str, ...] = ()  # PTX the driver JIT-compiles for this and newer GPUs
    source: str = ""


#: (framework, version, arch) -> the wheels' CUDA facts, from their metadata and contents
#: (REFERENCE.md, "CUDA userspace from PyPI", looked up 2026-12-01). A release not listed
#: here is not checked: add it when a recipe moves to it.
FRAMEWORK_WHEELS: dict[tuple[str, str, str], WheelCuda] = {
    ("pytorch", "2.13.0", "x86_64"): WheelCuda(
        cuda="13.0",
        compute_capabilities=("7.5", "8.0", "8.6", "9.0", "10.0", "12.0"),
        source="PyPI torch 2.13.0 (2.13.0+cu130): torch.cuda.get_arch_list()",
    ),
    ("tensorflow", "2.21.0", "x86_64"): WheelCuda(
        cuda="12",
        compute_capabilities=("6.0", "7.0", "8.0", "8.9"),
        ptx=("9.0",),
        source="PyPI tensorflow[and-cuda] 2.21.0: tf.sysconfig.get_build_info(), -cu12 wheels",
    ),
}

#: The oldest compute capability each nvcc major compiles for (Horovod's kernels).
NVCC_MIN_CAPABILITY = {"13": (7, 5), "12": (5, 0)}

#: Pinned wheels whose version is the recipe's cudnn / nccl / CUDA runtime.
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[A-Za-z0-9.+!_-]+)$")
_SUFFIX = re.compile(r"-cu(?P<major>\d+)$")


def _cc(value: str) -> tuple[int, int]:
    major, minor = value.split(".")
    return int(major), int(minor)


def _runs_on(cc: str, compiled: tuple[str, ...]) -> bool:
    """Kernels for sm_XY run on GPUs of major X and minor >= Y (CUDA binary compatibility)."""
    major, minor = _cc(cc)
    return any(m == major and n <= minor for m, n in map(_cc, compiled))


def _pins(settings: Settings) -> dict[str, str]:
    pins = {}
    for line in settings.pip.constraints:
        match = _PIN.match(line)
        if match:
            pins[match["name"].lower().replace("_", "-")] = match["version"]
    return pins


def _cuda_matches(recipe: str, wheels: str) -> bool:
    """Wheels built for '13.0' need 13.0; wheels for '12' (any 12.x userspace) need 12.x."""
    if "." in wheels:
        return _same_release(recipe, wheels)
    return recipe.split(".")[0] == wheels


def _same_release(found: str, wanted: str) -> bool:
    """'9.20.0.48' is release '9.20'; '2.29.7' is '2.29.7'; '13.0.96' is '13.0'."""
    return found == wanted or found.startswith(wanted + ".")


def check_cuda_facts(settings: Settings, variant: str, where: Callable[[KeyPath], str]) -> None:
    """Refuse a GPU variant whose CUDA facts disagree with its wheels (RecipeError, exit 2)."""
    cuda = settings.cuda
    if cuda is None:
        return
    major = cuda.version.split(".")[0]
    pins = _pins(settings)
    if not pins:
        raise RecipeError(
            f"{where(('pip', 'constraints'))}: variant {variant} has a CUDA target but no "
            "pip.constraints: the NVIDIA wheels name each other by ranges and would float",
            hint="pin the framework and every nvidia-*/cuda-* wheel it pulls in "
            "(`pip install --dry-run --report` lists them)",
        )
    for framework in ("pytorch", "tensorflow"):
        config = getattr(settings, framework)
        if config is None:
            continue
        facts = FRAMEWORK_WHEELS.get((framework, config.version, settings.platform.arch))
        if facts is None:
            continue
        if not _cuda_matches(cuda.version, facts.cuda):
            raise RecipeError(
                f"{where(('cuda', 'version'))}: variant {variant}: cuda.version is "
                f"{cuda.version}, but {framework} {config.version}'s wheels are a CUDA "
                f"{facts.cuda} build ({facts.source})",
                hint=f"set cuda.version to {facts.cuda}"
                + ("" if "." in facts.cuda else ".x (the minor of the CUDA wheels)")
                + f", or name a {framework} release built for CUDA {cuda.version}",
            )
        lowest_ptx = min((_cc(p) for p in facts.ptx), default=None)
        for cc in cuda.compute_capabilities:
            covered = _runs_on(cc, facts.compute_capabilities) or (
                lowest_ptx is not None and _cc(cc) >= lowest_ptx
            )
            if not covered:
                raise RecipeError(
                    f"{where(('cuda', 'compute_capabilities'))}: variant {variant}: compute "
                    f"capability {cc} is not in {framework} {config.version}'s wheels",
                    hint="the wheels have kernels for "
                    + ", ".join(facts.compute_capabilities)
                    + (f" and PTX for {', '.join(facts.ptx)} and newer" if facts.ptx else ""),
                )
    # The recipe's cuDNN, NCCL and CUDA runtime are the pinned wheels' versions. CUDA 13's
    # runtime wheel dropped the -cu suffix (nvidia-cuda-runtime 13.x).
    wheels = {
        "cudnn": (f"nvidia-cudnn-cu{major}",),
        "nccl": (f"nvidia-nccl-cu{major}",),
        "version": (f"nvidia-cuda-runtime-cu{major}",)
        + (("nvidia-cuda-runtime",) if int(major) >= 13 else ()),
    }
    for name, version in pins.items():
        suffix = _SUFFIX.search(name)
        family = name[: suffix.start()] if suffix else name
        pinned_major = suffix["major"] if suffix else major
        if family in ("nvidia-cudnn", "nvidia-nccl", "nvidia-cuda-runtime") and (
            pinned_major != major
        ):
            raise RecipeError(
                f"{where(('cuda', 'version'))}: variant {variant}: cuda.version is "
                f"{cuda.version} but pip.constraints pins {name}=={version} (CUDA "
                f"{suffix['major']})",
                hint=f"use the -cu{major} wheels, or set cuda.version to the wheels' CUDA",
            )
    for field, names in wheels.items():
        wanted = getattr(cuda, field)
        for name in names:
            version = pins.get(name)
            if version is not None and not _same_release(version, wanted):
                raise RecipeError(
                    f"{where(('cuda', field))}: variant {variant}: cuda.{field} is {wanted} "
                    f"but pip.constraints pins {name}=={version}",
                    hint=f"set cuda.{field} to {'.'.join(version.split('.')[:2])}, or pin "
                    "the wheel the recipe means",
                )
    nvcc_major = next(
        (
            m["version"].split(".")[0]
            for m in (_PIN.match(line) for line in settings.pip.constraints)
            if m and m["name"].lower() == "nvidia-cuda-nvcc"
        ),
        None,
    )
    lowest = NVCC_MIN_CAPABILITY.get(nvcc_major or "")
    if lowest is not None:
        for cc in cuda.compute_capabilities:
            if _cc(cc) < lowest:
                raise RecipeError(
                    f"{where(('cuda', 'compute_capabilities'))}: variant {variant}: nvcc "
                    f"{nvcc_major} (pip.constraints) cannot compile Horovod's kernels for "
                    f"compute capability {cc}",
                    hint=f"nvcc {nvcc_major} compiles for {lowest[0]}.{lowest[1]} and newer",
                )
