"""End to end: the GPU stack (recipes/gpu.yaml, pytorch-gpu) and a KNL stack (recipes/knl.yaml,
pytorch-knl) built for real on this machine, which has no GPU, no AVX-512 and no registry.

pytorch-gpu: the CUDA 13 userspace from PyPI's NVIDIA wheels (pinned set), Horovod compiled
with nvcc 13 and NCCL GPU operations in the builder stage; every stack check that needs no
GPU passes in the image, the training checks run on the CPU fallback, and the verdict is
"stack checked; not validated on a GPU": validate exits non-zero and publish refuses.
pytorch-knl: Horovod compiled with -march=knl, AVX-512 found in its libraries; the training
is not run here (no AVX-512) and the verdict says so.

A cold pytorch-gpu build downloads about 2.9 GB and compiles Horovod with nvcc (10-20 minutes
on 2 cores): with the runtime tests of issue 12 (Docker, podman-hpc, two-node Slurm) the
default run no longer fits it into the 60-minute cold CI, so it runs when
STACKBUILD_TEST_IMAGES=pytorch-gpu (the main job builds it: STACKBUILD_VARIANTS=gpu/pytorch-gpu).
pytorch-knl always runs; tensorflow-gpu and tensorflow-knl are built by the main job only
(README, "Tests").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stackbuild.build.validation_record import read_validation_record
from tests.helpers import variant_params

pytestmark = [pytest.mark.engine, pytest.mark.stack]

STACKBUILD = str(Path(sys.executable).with_name("stackbuild"))
VARIANTS = {"pytorch-gpu": "gpu", "pytorch-knl": "knl"}


@dataclass(frozen=True)
class Built:
    variant: str
    folder: Path
    manifest: dict[str, Any]

    @property
    def image(self) -> str:
        return str(self.manifest["refs"][0])


def stackbuild(*args: object, timeout: float = 2700) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STACKBUILD, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def in_image(image: str, *command: str, env: dict[str, str] | None = None) -> str:
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    proc = subprocess.run(
        ["podman", "run", "--rm", "--network=host", *flags, image, *command],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="session")
def accel_out(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    return tmp_path_factory.mktemp("accel-stack")


@pytest.fixture(scope="session", params=variant_params(*VARIANTS))
def built(request: pytest.FixtureRequest, accel_out: Path) -> Built:
    variant = request.param
    recipe = VARIANTS[variant]
    proc = stackbuild("build", recipe, "--variant", variant, "--output", accel_out / recipe)
    assert proc.returncode == 0, proc.stderr[-4000:]
    folder = accel_out / recipe / variant
    return Built(variant, folder, json.loads((folder / "manifest.json").read_text()))


@pytest.fixture(scope="session")
def validated(built: Built) -> tuple[Built, subprocess.CompletedProcess[str], dict[str, Any]]:
    """`stackbuild validate BUILD_DIR`, CosmoFlow on 1 and 2 ranks, every engine."""
    out = built.folder.parent / f"validation-{built.variant}"
    proc = stackbuild(
        "validate",
        built.folder,
        "--framework",
        "pytorch",
        "--suite",
        "cosmoflow",
        "-o",
        out,
        "--timeout",
        900,
    )
    found = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/report.json")}
    assert found, proc.stdout + proc.stderr
    return built, proc, found


def checks(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    named: dict[str, list[dict[str, Any]]] = {}
    for c in report["checks"]:
        named.setdefault(c["check"], []).append(c)
    return named


def test_the_gpu_image_carries_the_cuda_set_without_compiler_or_driver_stub(built: Built) -> None:
    if built.variant != "pytorch-gpu":
        pytest.skip("GPU image only")
    probe = (
        "import json, torch; print(json.dumps([torch.version.cuda, torch.cuda.get_arch_list(),"
        " torch.cuda.nccl.version(), torch.backends.cudnn.version()]))"
    )
    cuda, archs, nccl, cudnn = json.loads(in_image(built.image, "python", "-c", probe))
    assert cuda == "13.0" and {"sm_80", "sm_90"} <= set(archs)
    assert nccl == [2, 29, 7] and cudnn // 100 == 920
    # Libraries through ld.so.conf, none through LD_LIBRARY_PATH; no nvcc, no libcuda.
    listed = in_image(built.image, "cat", "/etc/ld.so.conf.d/stackbuild-cuda.conf")
    assert "/nvidia/nccl/lib" in listed and "/nvidia/cu13/lib" in listed
    script = (
        "! find / -xdev -name nvcc -type f | grep . "
        "&& ! find / -xdev -name 'libcuda.so*' | grep . "
        "&& ! command -v gcc && ldconfig -p | grep -q libnccl.so.2"
    )
    in_image(built.image, "sh", "-c", script)
    labels = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", "--format", "{{json .Labels}}", built.image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert labels["io.stackbuild.cuda.version"] == "13.0"
    assert labels["io.stackbuild.cuda.driver"] == ">=580"


def test_horovod_is_built_with_nccl_and_imports_with_an_empty_library_path(built: Built) -> None:
    if built.variant != "pytorch-gpu":
        pytest.skip("GPU image only")
    text = in_image(built.image, "cat", "/opt/stackbuild/horovod-check-build.txt")
    assert "[X] NCCL" in text and "[X] MPI" in text and "[X] Gloo" in text, text
    code = "import horovod.torch as hvd; print(hvd.nccl_built(), hvd.cuda_built())"
    out = in_image(built.image, "python", "-c", code, env={"LD_LIBRARY_PATH": ""})
    assert out.split() == ["22907", "True"], out


def test_the_knl_horovod_really_uses_avx512(built: Built) -> None:
    if built.variant != "pytorch-knl":
        pytest.skip("KNL image only")
    isa = json.loads(in_image(built.image, "cat", "/opt/stackbuild/horovod-isa.json"))
    assert isa["march"] == "knl"
    assert sum(lib["zmm"] for lib in isa["libraries"].values()) > 0, isa


def test_validation_stack_checks_pass_but_the_verdict_is_not_passed(
    validated: tuple[Built, subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    built, proc, reports = validated
    assert proc.returncode != 0, "an image that cannot be validated here must not pass"
    wanted = {
        "pytorch-gpu": "stack checked; not validated on a GPU",
        "pytorch-knl": "built and stack-checked; not run: needs AVX-512",
    }[built.variant]
    assert wanted in proc.stdout
    scaling = []
    for launcher, report in reports.items():
        failed = [c for c in report["checks"] if c["verdict"] == "fail"]
        assert not [c for c in failed if c["category"] != "scaling"], (launcher, failed)
        scaling += [f"{launcher}: {c['subject']} {c['measured']}" for c in failed]
        # A scaling failure (the CPU fallback on a busy machine) makes the verdict "failed":
        # never "passed" either way.
        assert report["verdict"] == (wanted if not failed else "failed"), launcher
        named = checks(report)
        for name in ("framework-version", "no-compiler", "horovod-isa"):
            assert {c["verdict"] for c in named[name]} == {"pass"}, (launcher, name)
        runs_horovod = ("horovod-build", "mpi-flavor", "horovod-import-empty-ld-path")
        if built.variant == "pytorch-knl":
            # Horovod's -march=knl code cannot run here: those checks say so, none fails.
            for name in runs_horovod:
                assert {c["verdict"] for c in named[name]} == {"not-run"}, (launcher, name)
                assert "needs AVX-512" in named[name][0]["detail"]
        else:
            for name in runs_horovod:
                assert {c["verdict"] for c in named[name]} == {"pass"}, (launcher, name)
        if built.variant == "pytorch-gpu":
            for name in ("cuda-version", "cuda-arch", "nccl-version", "horovod-nccl"):
                assert {c["verdict"] for c in named[name]} == {"pass"}, (launcher, name)
            assert {c["verdict"] for c in named["gpu-visible"]} == {"not-run"}
            # The science path still runs in the GPU image, on the CPU.
            assert {c["verdict"] for c in named["cosmoflow-mae"]} == {"pass"}, launcher
        else:
            trained = [c for c in named["job-completed"] if "needs AVX-512" in c["detail"]]
            assert trained and all(c["verdict"] == "not-run" for c in trained)
    record = read_validation_record(built.folder)
    assert record is not None and not record.passed
    if scaling and os.environ.get("STACKBUILD_LENIENT_SCALING") == "1":
        pytest.skip("weak scaling below 0.6 (STACKBUILD_LENIENT_SCALING=1): " + "; ".join(scaling))
    assert not scaling, "weak scaling of the CPU fallback below 0.6: " + "; ".join(scaling)
    assert wanted in record.verdicts


def test_publish_refuses_an_image_that_was_not_validated(
    validated: tuple[Built, subprocess.CompletedProcess[str], dict[str, Any]], registry: str
) -> None:
    built, _proc, _reports = validated
    proc = stackbuild("publish", built.folder, "--registry", f"{registry}/hpc", "--no-tls-verify")
    assert proc.returncode == 2 and "not validated" in proc.stderr, proc.stderr
