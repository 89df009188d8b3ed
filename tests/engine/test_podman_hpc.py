"""NERSC's podman-hpc for real (scripts/setup.d/35-podman-hpc.sh installs it and this
machine's site config): `export --to podman-hpc` migrates the pytorch-cpu image into a
squashfs store that runs on its own, `srun --mpi=pmi2 podman-hpc run --mpi` forms one MPI
job whose ranks load the site's MPICH (the host's copy, bound in by the mpich module) and
not the image's (also through the rendered module: `module load`, then `srun python`), and
the rendered validate-podman-hpc.sbatch, whose steps run their ranks that way, passes.
(`stackbuild validate --runtime podman-hpc --launcher srun` runs the same steps; it passed
here by hand and is left out of CI for time.)

The image is the session's pytorch-cpu build (tests/conftest.py, cpu_stack_build);
$STACKBUILD_TEST_PYTORCH_CPU names an already built image instead (reruns without a build).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.build.export import copy_into_podman_hpc, migrated_squashfs, podman_hpc_squash_dir
from stackbuild.build.images import inspect_image
from tests.slurm import two_nodes
from tests.slurm.jobs import needs_slurm, submit

pytestmark = [pytest.mark.engine, pytest.mark.stack, pytest.mark.tools]

LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")
SITE_MPICH = Path("/opt/site-mpich/lib")  # where 35-podman-hpc.sh copies the host MPICH
MODULE_DIR = "/opt/udiImage/modules/mpich"  # where the site's mpich module binds it
IMAGE_LIBDIR = "/usr/lib/x86_64-linux-gnu"  # the image's own MPICH (Debian libmpich12)
STACKBUILD = str(Path(sys.executable).with_name("stackbuild"))
#: The shipped cpu recipe's jobs (2 nodes x 1 rank), cut to what the two-node cluster's
#: 1-core nodes run in about 2 minutes: one CPU per rank, the GAN. The scaling threshold is
#: low: the cores are shared with other work.
SHIPPED_JOBS = "  jobs:\n    nodes: 2\n    ranks_per_node: 1\n"
TWO_NODE_JOBS = """  jobs:
    nodes: 2
    ranks_per_node: 1
    cpus_per_rank: 1
    suite: [gan]
    config: small
    time: "00:20:00"
    min_scaling_efficiency: 0.2
"""

#: Each rank: Horovod over MPI (its MPI_Init needs Slurm's PMI in the container), an
#: all-reduce of rank+1, and which libmpich file the process mapped (path, device, inode).
PROBE = """
import json, os
import torch
import horovod.torch as hvd
hvd.init()
total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum).item()
maps = set()
for line in open("/proc/self/maps"):
    fields = line.split()
    if len(fields) >= 6 and os.path.basename(fields[5]).startswith(("libmpich.so", "libmpi.so")):
        major, minor = (int(x, 16) for x in fields[3].split(":"))
        maps.add((fields[5], os.makedev(major, minor), int(fields[4])))
print(json.dumps({"rank": hvd.rank(), "size": hvd.size(), "mpi": hvd.mpi_enabled(),
                  "sum": total, "libmpi": sorted(maps)}), flush=True)
"""


def _unusable() -> str:
    if shutil.which("podman-hpc") is None:
        return "podman-hpc not installed: run scripts/setup-host.sh (setup.d/35-podman-hpc.sh)"
    if os.geteuid() != 0:
        return "podman-hpc's site config here uses root's stores: run as root"
    return ""


needs_podman_hpc = pytest.mark.skipif(bool(_unusable()), reason=_unusable() or "-")


@pytest.fixture(scope="module")
def pytorch_cpu(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, Any]]],
) -> tuple[Path | None, str]:
    """(build folder or None, image reference) of the pytorch-cpu image."""
    if _unusable():
        pytest.skip(_unusable())
    given = os.environ.get("STACKBUILD_TEST_PYTORCH_CPU")
    if given:
        folder, image = None, given
    else:
        built, manifest = cpu_stack_build("pytorch-cpu")
        folder, image = built, str(manifest["image_id"]).removeprefix("sha256:")
    # podman-hpc has a store of its own: the image goes in as `export --to podman-hpc` puts it
    copy_into_podman_hpc(inspect_image(image), podman_hpc_squash_dir())
    return folder, image


def site_libmpich() -> Path:
    """The site MPICH's real file (libmpich.so.12.x.y) on the host."""
    return (SITE_MPICH / "libmpich.so.12").resolve()


def podman_hpc(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the podman-hpc on PATH (output captured, never raises on failure)."""
    return subprocess.run(
        ["podman-hpc", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def probe_lines(stdout: str) -> list[dict[str, Any]]:
    """The JSON lines the ranks of PROBE printed."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def empty_primary_store(tmp_path: Path) -> Iterator[dict[str, str]]:
    """podman-hpc with an empty store of its own: only its squashfs store holds images."""
    run_root = Path(tempfile.mkdtemp(prefix="phpc-run-", dir="/tmp"))  # podman: <= 50 chars
    env = {
        "PODMANHPC_GRAPH_ROOT": str(tmp_path / "primary" / "storage"),
        "PODMANHPC_RUN_ROOT": str(run_root),
    }
    yield env
    # fuse-overlayfs-wrap unmounts a squashfs lower layer in the background once the
    # container is gone: wait for that, so the temporary stores can be removed.
    for _ in range(50):
        if str(tmp_path) not in Path("/proc/mounts").read_text():
            break
        time.sleep(0.2)
    shutil.rmtree(run_root, ignore_errors=True)


@needs_podman_hpc
def test_export_to_podman_hpc_migrates_a_squashfs_that_runs_without_the_local_image(
    pytorch_cpu: tuple[Path | None, str], tmp_path: Path, empty_primary_store: dict[str, str]
) -> None:
    folder, image = pytorch_cpu
    store = tmp_path / "squash"
    proc = subprocess.run(
        [STACKBUILD, "export", str(folder or image), "--to", "podman-hpc", "--squash-dir", store],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reported = Path(proc.stdout.split()[0])
    image_id = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert reported == migrated_squashfs(store, image_id)
    assert reported.is_relative_to(store) and reported.stat().st_size > 100 * 2**20
    listing = subprocess.run(
        ["unsquashfs", "-l", reported], capture_output=True, text=True, check=True
    ).stdout
    assert "/opt/venv/bin/python" in listing  # the image's whole root, squashed
    # With an empty store of its own, podman-hpc finds the image in the squashfs store only.
    squash = ["--squash-dir", str(store)]
    images = podman_hpc(
        *squash, "images", "--format", "{{.ID}} {{.ReadOnly}}", env=empty_primary_store
    )
    assert f"{image_id[:12]} true" in images.stdout, images.stdout + images.stderr
    run = podman_hpc(
        *squash,
        "run",
        "--rm",
        image,
        "python",
        "-c",
        "import torch, horovod.torch; print('torch', torch.__version__)",
        env=empty_primary_store,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torch 2.13.0" in run.stdout


@needs_podman_hpc
def test_export_to_podman_hpc_names_the_fix_when_the_image_cannot_reach_its_store(
    base_image: str, tmp_path: Path, empty_primary_store: dict[str, str]
) -> None:
    args = [STACKBUILD, "export", base_image, "--to", "podman-hpc", "--squash-dir", tmp_path / "sq"]
    # podman-hpc's graph_root cannot be written: the copy from podman's store fails, saying so.
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    unwritable = {**empty_primary_store, "PODMANHPC_GRAPH_ROOT": str(blocked / "storage")}
    unseen = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env={**os.environ, **unwritable},
        timeout=600,
        check=False,
    )
    assert unseen.returncode == 1, unseen.stdout + unseen.stderr
    assert "could not copy" in unseen.stderr and "podman-hpc infohpc" in unseen.stderr
    assert "Traceback" not in unseen.stderr
    missing = subprocess.run(
        args,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": "/usr/bin:/bin"},  # podman, but no podman-hpc
        timeout=600,
        check=False,
    )
    assert missing.returncode == 1
    assert "podman-hpc is not installed" in missing.stderr
    assert "scripts/setup-host.sh" in missing.stderr


@needs_podman_hpc
@needs_slurm
def test_srun_ranks_of_podman_hpc_mpi_form_one_job_on_the_site_mpich(
    pytorch_cpu: tuple[Path | None, str], tmp_path: Path
) -> None:
    _folder, image = pytorch_cpu
    (tmp_path / "probe.py").write_text(PROBE)
    proc = subprocess.run(
        [
            "srun",
            "--ntasks=2",
            "--mpi=pmi2",
            "--kill-on-bad-exit=1",
            "podman-hpc",
            "run",
            "--rm",
            "--mpi",
            f"--volume={tmp_path}/probe.py:/probe.py:ro",
            image,
            "python",
            "/probe.py",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = probe_lines(proc.stdout)
    # One 2-rank job (not two 1-rank jobs): both ranks, world size 2, the sum over both.
    assert sorted(r["rank"] for r in ranks) == [0, 1], proc.stdout
    assert all(r["size"] == 2 and r["mpi"] and r["sum"] == 3.0 for r in ranks), ranks
    # The swap: each rank mapped the site's copy (bound from the host: same device and
    # inode as the host file), at the module's path, and no libmpich of the image.
    host = site_libmpich()
    expected = [f"{MODULE_DIR}/{host.name}", host.stat().st_dev, host.stat().st_ino]
    for rank in ranks:
        assert rank["libmpi"] == [expected], rank


def module_srun_probe(
    workdir: Path, rendered: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`module load pytorch/2.13-cpu; srun -n 2 --mpi=pmi2 python probe.py` in workdir, with
    the module rendered in rendered/pytorch-cpu."""
    (workdir / "probe.py").write_text(PROBE)  # the wrapper mounts $PWD
    script = (
        f"source {LMOD_INIT}; module use {rendered}/pytorch-cpu/modulefiles/lmod; "
        "module load pytorch/2.13-cpu; srun -n 2 --mpi=pmi2 python probe.py"
    )
    return subprocess.run(
        ["bash", "-c", script],
        cwd=workdir,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
        check=False,
    )


@needs_podman_hpc
@needs_slurm
@pytest.mark.skipif(not LMOD_INIT.is_file(), reason="Lmod not installed (scripts/setup-host.sh)")
def test_module_load_then_srun_python_is_one_mpi_job_through_podman_hpc(
    pytorch_cpu: tuple[Path | None, str], tmp_path: Path
) -> None:
    """What a user types: the rendered podman-hpc module, then `srun -n 2 python probe.py`."""
    _folder, image = pytorch_cpu
    render = subprocess.run(
        [
            STACKBUILD,
            "render",
            "cpu",
            "-v",
            "pytorch-cpu",
            "--runtime",
            "podman-hpc",
            "--only",
            "modules",
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert render.returncode == 0, render.stderr
    # exactly this session's image
    proc = module_srun_probe(tmp_path, tmp_path / "out", {"STACKBUILD_IMAGE_OVERRIDE": image})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    ranks = probe_lines(proc.stdout)
    assert sorted(r["rank"] for r in ranks) == [0, 1], proc.stdout
    assert all(r["size"] == 2 and r["sum"] == 3.0 for r in ranks), ranks
    host = site_libmpich()
    assert all(
        r["libmpi"] == [[f"{MODULE_DIR}/{host.name}", host.stat().st_dev, host.stat().st_ino]]
        for r in ranks
    ), ranks


@needs_podman_hpc
@needs_slurm
@pytest.mark.skipif(not LMOD_INIT.is_file(), reason="Lmod not installed (scripts/setup-host.sh)")
def test_a_pinned_module_checks_the_validated_id_in_each_task_of_an_mpi_job(
    pytorch_cpu: tuple[Path | None, str], tmp_path: Path
) -> None:
    """The pinned wrapper's check at start (`podman-hpc image inspect`) in each task of `srun
    -n 2 --mpi=pmi2`, where podman-hpc gives every podman command --preserve-fds (which
    inspect refuses; seen: the validated image refused as absent): the tag that names the
    validated image runs, one that names another image stops with exit 3."""
    from stackbuild.recipe import expand_matrix, load_recipe, select_variant
    from stackbuild.recipe.matrix import with_runtime
    from stackbuild.render.pin import ImagePin
    from stackbuild.render.renderer import render_variant

    _folder, image = pytorch_cpu
    image_id = inspect_image(image).id
    tag = "localhost/stackbuild-test/pinned:phpc"
    variants = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))
    variant = with_runtime(select_variant(variants, "pytorch-cpu"), "podman-hpc")
    assert podman_hpc("tag", image_id, tag).returncode == 0
    try:
        for validated, wanted in ((image_id, 0), ("0" * 64, 3)):
            pin = ImagePin(variant.build_digest, f"sha256:{validated}", tag)
            out = tmp_path / validated[:4]
            render_variant(dataclasses.replace(variant, pin=pin), out, ["modules"])
            proc = module_srun_probe(tmp_path, out, {})
            assert proc.returncode == wanted, proc.stdout[-2000:] + proc.stderr[-3000:]
            if wanted == 0:
                ranks = probe_lines(proc.stdout)
                assert sorted(r["rank"] for r in ranks) == [0, 1], proc.stdout
            else:
                assert f"{tag} is {image_id}, not the validated image" in proc.stderr
    finally:
        podman_hpc("untag", image_id, tag)


@needs_podman_hpc
def test_rendered_podman_hpc_job_script_validates_across_two_nodes_with_the_site_mpich(
    pytorch_cpu: tuple[Path | None, str], tmp_path: Path
) -> None:
    """validate-podman-hpc.sbatch as rendered (its shipped runtime lines), submitted to the
    two-node cluster: both nodes run the migrated image from podman-hpc's store (shared, as
    a site's on a parallel file system), each rank with the site MPICH swapped in. It runs
    the recipe's image tag, which the session build (or $STACKBUILD_TEST_PYTORCH_CPU's
    build) gave the image."""
    reason = two_nodes.unusable()
    if reason:
        pytest.skip(reason)
    recipes = tmp_path / "recipes"
    shutil.copytree(PROJECT_ROOT / "recipes", recipes)
    recipe = recipes / "cpu.yaml"
    text = recipe.read_text()
    assert SHIPPED_JOBS in text, "recipes/cpu.yaml's jobs section changed: update this test"
    recipe.write_text(text.replace(SHIPPED_JOBS, TWO_NODE_JOBS))
    render = subprocess.run(
        [
            STACKBUILD,
            "render",
            str(recipe),
            "-v",
            "pytorch-cpu",
            "--runtime",
            "podman-hpc",
            "--only",
            "jobs",
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert render.returncode == 0, render.stderr
    script = tmp_path / "out" / "pytorch-cpu" / "jobs" / "validate-podman-hpc.sbatch"
    assert "#SBATCH --nodes=2" in script.read_text()
    status, report, output = submit(script, tmp_path / "submit", two_nodes.environment(), 1200)
    assert status == 0 and report["passed"] is True, output[-4000:]
    # The job's probe ran under srun with --mpi: Horovod loaded the site's MPICH.
    flavour = next(c for c in report["checks"] if c["check"] == "mpi-flavor")
    assert str(flavour["measured"]).startswith(f"{MODULE_DIR}/libmpich.so.12"), flavour
    # The 2-rank GAN step ran one rank on each node.
    (report_dir,) = (tmp_path / "submit").glob("validation-pytorch-cpu-*")
    ranks = [
        json.loads((report_dir / "gan-pytorch-r2" / f"rank-{r}.json").read_text()) for r in (0, 1)
    ]
    assert [r["host"] for r in ranks] == list(two_nodes.NODES), ranks


@needs_podman_hpc
def test_without_mpi_the_rank_keeps_the_images_own_mpich(
    pytorch_cpu: tuple[Path | None, str], tmp_path: Path
) -> None:
    """The control for the swap test: the probe tells the image's MPICH from the site's."""
    _folder, image = pytorch_cpu
    (tmp_path / "probe.py").write_text(PROBE)
    proc = podman_hpc(
        "run", "--rm", f"--volume={tmp_path}/probe.py:/probe.py:ro", image, "python", "/probe.py"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (rank,) = probe_lines(proc.stdout)
    host = site_libmpich()
    [(path, dev, ino)] = rank["libmpi"]
    assert path.startswith(f"{IMAGE_LIBDIR}/libmpich.so.12")
    assert (dev, ino) != (host.stat().st_dev, host.stat().st_ino)
