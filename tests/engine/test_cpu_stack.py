"""End to end: the shipped CPU stack (recipes/cpu.yaml) built, checked, validated, exported
and published, with the real recipe, templates, engine, frameworks, Horovod and registry.

The images are built once per session through the CLI, as a user would (`stackbuild build
cpu`); a cold run compiles Horovod twice (the whole module takes about 35 minutes on 2
cores), a rerun is served by the layer cache and the compiled-wheel cache
(~/.cache/stackbuild). It runs in CI (`.ci/run`); `pytest -m "not stack"` leaves it out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stackbuild.build.validation_record import read_validation_record
from stackbuild.render.pin import read_pin
from tests.helpers import variant_params

pytestmark = [pytest.mark.engine, pytest.mark.stack]

STACKBUILD = str(Path(sys.executable).with_name("stackbuild"))
#: variant -> (framework in the harness, Horovod framework name, launchers that validate it):
#: PyTorch trains with DDP (torchrun) and with Horovod, TensorFlow/Keras with Horovod.
VARIANTS = {
    "pytorch-cpu": ("pytorch", "torch", ("torchrun", "horovodrun")),
    "tensorflow-cpu": ("tensorflow", "tensorflow", ("horovodrun",)),
}


@dataclass(frozen=True)
class Built:
    variant: str
    folder: Path
    manifest: dict[str, object]

    @property
    def image(self) -> str:
        return str(self.manifest["refs"][0])  # type: ignore[index]


def stackbuild(*args: object, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STACKBUILD, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


def in_image(image: str, *command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", "run", "--rm", "--network=host", "--ipc=host", image, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session", params=variant_params(*VARIANTS))
def built(request: pytest.FixtureRequest, cpu_stack_build: Callable[..., Any]) -> Built:
    """The variant's image, built once a session (tests/engine/conftest.py: cpu_stack_build)."""
    folder, manifest = cpu_stack_build(request.param)
    return Built(request.param, folder, manifest)


def test_image_imports_its_framework_without_compilers_apt_cache_or_headers(built: Built) -> None:
    framework = VARIANTS[built.variant][0]
    module = "torch" if framework == "pytorch" else "tensorflow"
    proc = in_image(
        built.image,
        "sh",
        "-c",
        f"python -c 'import {module}, horovod, validation; print({module}.__version__)' "
        # (mpich's mpicc wrapper is there for mpirun's package, but no compiler behind it)
        "&& ! command -v gcc && ! command -v cc && ! command -v c++ && ! command -v cmake "
        # and apt's package cache (about 100 MB) is not left in a layer
        "&& ! ls /var/cache/apt/*.bin /var/cache/apt/archives/*.deb "
        # nor the framework's C/C++ headers (recipe pip.runtime_prune)
        f"&& ! ls -d /opt/venv/lib/python3*/site-packages/{module}/include"
        # nor torch's C++ test programs, while the helper torch.multiprocessing runs stays
        + (
            " && ! ls -d /opt/venv/lib/python3*/site-packages/torch/test"
            " && test -x /opt/venv/lib/python3*/site-packages/torch/bin/torch_shm_manager"
            if module == "torch"
            else ""
        ),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert built.manifest["variant"] == built.variant
    assert built.manifest["sbom"], "the manifest lists the image's packages"
    sbom = json.loads((built.folder / "sbom.cdx.json").read_text())
    assert {"pip", "dpkg"} <= {
        p["value"] for c in sbom["components"] for p in c.get("properties", [])
    }, "the CycloneDX SBOM beside the manifest lists pip and dpkg packages"


def test_image_records_horovod_check_build(built: Built) -> None:
    proc = in_image(built.image, "cat", "/opt/stackbuild/horovod-check-build.txt")
    assert proc.returncode == 0, proc.stderr
    marks = {
        line.split("]", 1)[1].strip(): line.strip().startswith("[X]")
        for line in proc.stdout.splitlines()
        if line.strip().startswith("[")
    }
    framework = "PyTorch" if built.variant.startswith("pytorch") else "TensorFlow"
    assert marks[framework]
    assert marks["MPI"] and marks["Gloo"], proc.stdout  # controllers and CPU operations
    assert not marks["NCCL"]
    # Horovod 0.28.1 marks PyTorch as available whenever `import horovod.torch` succeeds,
    # which it does (with a warning) without torch; so look at the compiled libraries.
    libs = in_image(
        built.image, "sh", "-c", "cd /opt/venv/lib/python3*/site-packages/horovod && ls */mpi_lib*"
    ).stdout.split()
    wanted = "torch/mpi_lib_v2" if framework == "PyTorch" else "tensorflow/mpi_lib"
    assert [lib.split(".")[0] for lib in libs] == [wanted], libs


def test_processes_in_the_image_get_the_recipe_environment(built: Built) -> None:
    """The recipe's `env` (PyTorch: glibc malloc tunables, see recipes/cpu.yaml) reaches a
    process started in the image, where a user's training runs."""
    wanted = json.loads((built.folder / "variant.json").read_text())["settings"]["env"]
    if built.variant.startswith("pytorch"):
        assert "GLIBC_TUNABLES" in wanted
    proc = in_image(
        built.image, "python", "-c", "import json, os; print(json.dumps(dict(os.environ)))"
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert {k: seen.get(k) for k in wanted} == wanted


@pytest.mark.parametrize("controller", ["gloo", "mpi"])
def test_two_rank_horovod_collectives_give_the_right_sums(built: Built, controller: str) -> None:
    hvd_framework = VARIANTS[built.variant][1]
    proc = in_image(
        built.image,
        "horovodrun",
        "-np",
        "2",
        f"--{controller}",
        "python",
        "-m",
        "validation.smoke",
        "--frameworks",
        hvd_framework,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("smoke PASSED") == 2 and "MISMATCH" not in out
    assert f"controller={controller}" in out


def test_two_rank_torch_distributed_gloo_gives_the_right_sums(built: Built) -> None:
    if not built.variant.startswith("pytorch"):
        pytest.skip("torch.distributed is checked in the PyTorch image")
    proc = in_image(
        built.image,
        "torchrun",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "validation.smoke",
        "--api",
        "torch",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count("smoke PASSED") == 2 and "MISMATCH" not in out


@pytest.fixture(scope="session")
def validated(built: Built) -> tuple[Built, subprocess.CompletedProcess[str]]:
    """`stackbuild validate BUILD_DIR` with the default --launcher auto: one pass per engine."""
    framework = VARIANTS[built.variant][0]
    report_dir = built.folder.parent / f"validation-{built.variant}"
    # --timeout: a hung job fails its check after 15 minutes instead of holding the run
    validate = ("validate", built.folder, "--framework", framework, "--timeout", 900)
    proc = stackbuild(*validate, "--output", report_dir)
    return built, proc


def reports(built: Built) -> dict[str, dict[str, Any]]:
    """launcher -> report.json of the validation pass it ran (`--output DIR/LAUNCHER`)."""
    folder = built.folder.parent / f"validation-{built.variant}"
    found = {p.parent.name: json.loads(p.read_text()) for p in folder.glob("*/report.json")}
    assert sorted(found) == sorted(VARIANTS[built.variant][2]), "auto ran other passes"
    return found


def failures(report: dict[str, Any], scaling: bool) -> list[str]:
    """Failed checks of a report: the scaling ones, or all the others."""
    return [
        f"{c['check']} {c['subject']}: measured {c['measured']}, {c['detail']}"
        for c in report["checks"]
        if c["verdict"] == "fail" and (c["category"] == "scaling") == scaling
    ]


def test_small_suite_trains_correctly_in_the_image_on_one_and_two_ranks(
    validated: tuple[Built, subprocess.CompletedProcess[str]],
) -> None:
    """Every correctness, distributed and stack check passes (scaling: the next test)."""
    built, proc = validated
    for launcher, report in reports(built).items():
        suites = {c["subject"].split("/")[0] for c in report["checks"] if "/" in c["subject"]}
        assert {"cosmoflow", "climate", "gan"} <= suites, launcher
        ranks = {run["world_size"] for run in report["runs"].values() if "world_size" in run}
        assert ranks == {1, 2}, (launcher, ranks)
        crashed = {j["tag"]: j["log_tail"] for j in report["jobs"] if j["returncode"]}
        assert not failures(report, scaling=False), (launcher, crashed, proc.stderr[-2000:])
    # validate's status is the verdict: non-zero exactly when some check of a pass failed
    assert (proc.returncode == 0) == all(r["passed"] for r in reports(built).values())


def test_weak_scaling_in_the_image(
    validated: tuple[Built, subprocess.CompletedProcess[str]],
) -> None:
    """2 ranks vs 1 on this machine, threshold 0.6 (validation/checks.py), asserted: with
    the communication threads at idle priority and the PyTorch image's malloc tunables,
    every workload measured 0.82-1.0 here on an otherwise idle 2-core VM (README,
    Benchmarks). Other work on the same cores pulls a synchronous 2-rank job down to its
    slower rank's pace; STACKBUILD_LENIENT_SCALING=1 (for machines known to be busy) turns
    a scaling failure into a skip with the measured values. The validation record (and so
    publish) holds the verdict either way."""
    built, _proc = validated
    failed = [
        f"{launcher}: {f}" for launcher, r in reports(built).items() for f in failures(r, True)
    ]
    record = read_validation_record(built.folder)
    assert record is not None and record.covers(built.manifest)
    assert record.passed == (not failed and all(r["passed"] for r in reports(built).values()))
    if failed and os.environ.get("STACKBUILD_LENIENT_SCALING") == "1":
        pytest.skip("weak scaling below 0.6 (STACKBUILD_LENIENT_SCALING=1): " + "; ".join(failed))
    assert not failed


def test_a_passing_validation_pins_the_user_files_to_the_validated_image(
    validated: tuple[Built, subprocess.CompletedProcess[str]],
) -> None:
    """The module's wrappers then run an immutable tag that a rebuild never moves."""
    built, proc = validated
    record = read_validation_record(built.folder)
    pin = read_pin(built.folder)
    if record is None or not record.passed:
        assert pin is None and "user files not pinned" in proc.stdout, proc.stdout
        pytest.skip("the validation did not pass here (the tests above say why): no pin")
    assert pin is not None and pin.image_id == built.manifest["image_id"], proc.stdout
    image_id = pin.image_id.removeprefix("sha256:")
    assert pin.reference == f"{built.image}-{image_id[:12]}"
    named = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", pin.reference],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert named == image_id
    name, version = built.image.rsplit("/", 1)[-1].split(":")
    wrapper = built.folder / "wrappers" / name / version / "bin" / "python"
    assert f"default_image={pin.reference}\n" in wrapper.read_text()
    ran = subprocess.run(
        [wrapper, "-c", "print(6 * 7)"],
        capture_output=True,
        text=True,
        cwd=built.folder,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert ran.returncode == 0 and ran.stdout.strip() == "42", ran.stderr


def test_export_squashfs_for_shifter(built: Built, tmp_path: Path) -> None:
    out = tmp_path / f"{built.variant}.sqsh"
    proc = stackbuild("export", built.folder, "--to", "squashfs", "--output", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"hsqs"
    listing = subprocess.run(
        ["unsquashfs", "-l", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "squashfs-root/opt/stackbuild/validation/__main__.py" in listing
    assert "squashfs-root/opt/stackbuild/horovod-check-build.txt" in listing
    # What the image's config sets, beside it in the form Shifter's gateway writes.
    meta = out.with_suffix(".meta").read_text().splitlines()
    assert meta[0] == "FORMAT: squashfs" and "WORKDIR: /" in meta
    env = dict(
        line.removeprefix("ENV: ").split("=", 1) for line in meta if line.startswith("ENV: ")
    )
    assert env["PATH"].startswith("/opt/venv/bin:") and "LD_LIBRARY_PATH" in env


def test_publish_only_a_validated_image_and_pull_it_back_by_digest(
    validated: tuple[Built, subprocess.CompletedProcess[str]], registry: str
) -> None:
    built, _proc = validated
    record = read_validation_record(built.folder)
    publish = ["publish", built.folder, "--registry", f"{registry}/stackbuild", "--no-tls-verify"]
    proc = stackbuild(*publish)
    forced = record is None or not record.passed
    if forced:
        # The validation test reports why; here the gate must hold, and --force (a staff
        # decision, which the output names) still exercises the registry path.
        assert proc.returncode != 0 and "validat" in proc.stderr, proc.stderr
        proc = stackbuild(*publish, "--force")
    assert proc.returncode == 0, proc.stderr
    pinned = [line.split()[1] for line in proc.stdout.splitlines() if "@sha256:" in line]
    assert pinned, proc.stdout
    pull = subprocess.run(
        ["podman", "pull", "--tls-verify=false", pinned[0]],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pull.returncode == 0, pull.stderr
    image_id = str(built.manifest["image_id"]).removeprefix("sha256:")
    pulled = pull.stdout.strip().splitlines()[-1]
    if forced:
        # A forced push is a relabelled copy that says it was not validated.
        labels = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{json .Labels}}", pulled],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(labels)["io.stackbuild.validated"] == "false"
    else:
        assert pulled == image_id
        # The user files now name the registry digest (podman runs it; a rebuild cannot
        # move it) and, for Shifter, the pushed immutable tag.
        pin = read_pin(built.folder)
        assert pin is not None and pin.digest_reference == pinned[-1], proc.stdout
        name, version = built.image.rsplit("/", 1)[-1].split(":")
        wrapper = built.folder / "wrappers" / name / version / "bin" / "python"
        assert f"default_image={pin.digest_reference}\n" in wrapper.read_text()
        shifter = (built.folder / "jobs" / "validate-shifter.sbatch").read_text()
        assert f"#SBATCH --image=docker:{pin.reference}\n" in shifter
        assert not pin.reference.startswith("localhost/")
