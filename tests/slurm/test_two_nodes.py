"""Jobs across the two nodes of scripts/setup.d/55-slurm-two-nodes.sh, for real.

Each node is a slurmd in a network namespace of its own, so ranks on different nodes can
only reach each other over the veth network (10.77.0.0/24): loopback and the host's network
are not shared. The Horovod and torch.distributed ranks are tests/slurm/ranks.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.recipe import expand_matrix, load_recipe
from stackbuild.render.renderer import render_variant
from tests.slurm import two_nodes
from tests.slurm.jobs import assert_validated, submit

pytestmark = [pytest.mark.tools, pytest.mark.usefixtures("two_node_cluster")]

IMAGE = "localhost/stackbuild/pytorch:2.13-cpu"
LMOD_INIT = Path("/usr/share/lmod/lmod/init/bash")
VENV_PYTHON = str(PROJECT_ROOT / ".venv" / "bin" / "python")
HERE = Path(__file__).resolve().parent
RANKS = HERE / "ranks.py"
LAUNCH = PROJECT_ROOT / "validation" / "slurm_launch.py"

#: recipes/cpu.yaml's own layout (2 nodes x 1 rank), one small suite. One CPU per rank:
#: each node has one core of its own (55-slurm-two-nodes.sh), so the 1-rank baseline and
#: each of the 2 ranks compute on one core alike. The scaling threshold is low because the
#: test machine's 2 cores are shared with other work; the check is computed and reported.
JOBS = """  jobs:
    nodes: 2
    ranks_per_node: 1
    cpus_per_rank: 1
    suite: [cosmoflow]
    config: small
    time: "00:15:00"
    min_scaling_efficiency: 0.2
"""


def rank_lines(output: str) -> dict[int, dict[str, Any]]:
    """The ranks' results (ranks.py's RANK lines) by rank."""
    results = [json.loads(line[5:]) for line in output.splitlines() if line.startswith("RANK ")]
    return {r["rank"]: r for r in results}


def assert_on_both_nodes(ranks: dict[int, dict[str, Any]]) -> None:
    """Rank 0 on the first node, rank 1 on the second, each with the node's own address
    and network namespace."""
    assert sorted(ranks) == [0, 1], ranks
    assert [ranks[r]["host"] for r in (0, 1)] == list(two_nodes.NODES)
    assert [ranks[r]["address"] for r in (0, 1)] == [
        two_nodes.ADDRESSES[n] for n in two_nodes.NODES
    ]
    assert ranks[0]["netns"] != ranks[1]["netns"]


def needs_horovod() -> None:
    """Skip unless the venv has the Horovod that scripts/setup.d/45-horovod.sh compiles."""
    probe = subprocess.run(
        [VENV_PYTHON, "-c", "import horovod.torch"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        pytest.skip("Horovod not in .venv (scripts/setup.d/45-horovod.sh compiles it)")


def test_srun_places_one_task_on_each_node_with_its_own_address() -> None:
    out = two_nodes.run(
        [
            "srun",
            "--nodes=2",
            "--ntasks=2",
            "sh",
            "-c",
            'echo "$SLURM_PROCID $(hostname) $(hostname -i) $(readlink /proc/self/ns/net)"',
        ],
        timeout=60,
    )
    rows = sorted(line.split() for line in out.splitlines())
    assert [row[:3] for row in rows] == [
        ["0", "sb2n1", "10.77.0.11"],
        ["1", "sb2n2", "10.77.0.12"],
    ], out
    own_netns = Path("/proc/self/ns/net").readlink().name
    assert len({rows[0][3], rows[1][3], own_netns}) == 3, out


def test_horovod_mpi_allreduce_across_nodes_natively() -> None:
    needs_horovod()
    out = two_nodes.run(
        ["srun", "--nodes=2", "--ntasks=2", "--mpi=pmi2", VENV_PYTHON, str(RANKS), "horovod"],
        timeout=120,
    )
    ranks = rank_lines(out)
    assert_on_both_nodes(ranks)
    for rank in ranks.values():
        # One MPI job of 2 ranks, 1 per node: MPI saw two hosts, not two singletons.
        assert (rank["size"], rank["local_size"], rank["controller"]) == (2, 1, "mpi"), rank
        assert rank["sum_ok"], rank


def test_horovod_gloo_allreduce_across_nodes_through_slurm_launch() -> None:
    needs_horovod()
    if not LAUNCH.exists():
        pytest.skip(f"{LAUNCH} missing")
    out = two_nodes.run(
        [
            "srun",
            "--nodes=2",
            "--ntasks=2",
            "--export=ALL,HOROVOD_CONTROLLER=gloo",
            VENV_PYTHON,
            str(LAUNCH),
            "--",
            VENV_PYTHON,
            str(RANKS),
            "horovod",
        ],
        timeout=120,
    )
    ranks = rank_lines(out)
    assert_on_both_nodes(ranks)
    for rank in ranks.values():
        assert (rank["size"], rank["local_size"], rank["controller"]) == (2, 1, "gloo"), rank
        assert rank["sum_ok"], rank


def test_torch_distributed_gloo_across_nodes_with_master_on_the_first_node() -> None:
    if not LAUNCH.exists():
        pytest.skip(f"{LAUNCH} missing")
    out = two_nodes.run(
        [
            "srun",
            "--nodes=2",
            "--ntasks=2",
            VENV_PYTHON,
            str(LAUNCH),
            "--",
            VENV_PYTHON,
            str(RANKS),
            "torch",
        ],
        timeout=120,
    )
    ranks = rank_lines(out)
    assert_on_both_nodes(ranks)
    for rank in ranks.values():
        assert (rank["size"], rank["master_addr"]) == (2, "sb2n1"), rank
        assert rank["sum_ok"], rank
        assert [p["address"] for p in rank["peers"]] == ["10.77.0.11", "10.77.0.12"], rank


@pytest.fixture(scope="module")
def module_srun(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, object]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], str]:
    """run(srun line) after `module load` of the session's pytorch-cpu build, in a work
    folder holding ranks.py, against the two-node cluster: the module's wrappers (podman)
    start one container per task, in the task's node."""
    if not LMOD_INIT.exists():
        pytest.skip("Lmod not installed (scripts/setup-host.sh)")
    folder, _ = cpu_stack_build("pytorch-cpu")
    work = tmp_path_factory.mktemp("two-node-module")
    shutil.copy(RANKS, work / "ranks.py")

    def run(line: str) -> str:
        script = (
            f"source {LMOD_INIT}\nmodule use {folder}/modulefiles/lmod\n"
            f"module load pytorch/2.13-cpu\ncd {work}\n{line}\n"
        )
        return two_nodes.run(["bash", "-c", script], timeout=240)

    return run


@pytest.mark.engine
@pytest.mark.stack
def test_module_horovod_mpi_is_one_job_across_nodes(module_srun: Callable[[str], str]) -> None:
    ranks = rank_lines(module_srun("srun -N 2 -n 2 --mpi=pmi2 python ranks.py horovod"))
    assert_on_both_nodes(ranks)
    for rank in ranks.values():
        # Slurm's PMI socket reached each container: one 2-rank MPI job over two hosts.
        assert (rank["size"], rank["local_size"], rank["controller"]) == (2, 1, "mpi"), rank
        assert rank["sum_ok"], rank


@pytest.mark.engine
@pytest.mark.stack
def test_module_horovod_gloo_is_one_job_across_nodes(module_srun: Callable[[str], str]) -> None:
    out = module_srun("HOROVOD_CONTROLLER=gloo srun -N 2 -n 2 --mpi=none python ranks.py horovod")
    ranks = rank_lines(out)
    assert_on_both_nodes(ranks)
    for rank in ranks.values():
        assert (rank["size"], rank["local_size"], rank["controller"]) == (2, 1, "gloo"), rank
        assert rank["sum_ok"], rank


@pytest.mark.engine
@pytest.mark.stack
def test_module_torch_distributed_is_one_job_across_nodes(
    module_srun: Callable[[str], str],
) -> None:
    ranks = rank_lines(module_srun("srun -N 2 -n 2 python ranks.py torch"))
    assert_on_both_nodes(ranks)
    for rank in ranks.values():
        assert (rank["size"], rank["master_addr"]) == (2, "sb2n1"), rank
        assert rank["sum_ok"], rank
        assert [p["address"] for p in rank["peers"]] == ["10.77.0.11", "10.77.0.12"], rank


@pytest.mark.engine
@pytest.mark.stack
def test_horovod_mpi_allreduce_across_nodes_with_podman_hpc_and_the_site_mpich(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, object]]],
) -> None:
    if shutil.which("podman-hpc") is None:
        pytest.skip("podman-hpc not installed (scripts/setup.d/35-podman-hpc.sh)")
    cpu_stack_build("pytorch-cpu")
    # podman-hpc's --mpi module (scripts/podman-hpc/): one shared container per node, each
    # task exec'd into it with its PMI socket, the host's MPICH swapped in for the image's.
    out = two_nodes.run(
        [
            "srun",
            "--nodes=2",
            "--ntasks=2",
            "--mpi=pmi2",
            "podman-hpc",
            "run",
            "--rm",
            "--mpi",
            f"--volume={HERE}:/opt/tests-slurm:ro",
            IMAGE,
            "python",
            "/opt/tests-slurm/ranks.py",
            "horovod",
        ],
        timeout=240,
    )
    ranks = rank_lines(out)
    assert_on_both_nodes(ranks)
    for rank in ranks.values():
        assert (rank["size"], rank["local_size"], rank["controller"]) == (2, 1, "mpi"), rank
        assert rank["sum_ok"], rank
        assert rank["libmpi"].startswith("/opt/udiImage/modules/mpich/"), rank


def render_two_node_job(
    tmp_path: Path, cpu_recipe_text: str, write_recipe: Callable, runtime: str = "podman"
) -> Path:
    """The pytorch-cpu variant's validate-RUNTIME.sbatch for 2 nodes x 1 rank, as shipped."""
    text = cpu_recipe_text.replace("  jobs:\n    nodes: 2\n    ranks_per_node: 1\n", JOBS)
    assert JOBS in text, "recipes/cpu.yaml's jobs section changed: update this test"
    variant = next(v for v in expand_matrix(load_recipe(write_recipe(text))) if "pytorch" in v.name)
    out = render_variant(variant, tmp_path / "render", formats=["jobs"])
    return out / "jobs" / f"validate-{runtime}.sbatch"


def validate_on_two_nodes(script: Path, submit_dir: Path) -> dict[str, Any]:
    """Submit the job script to the two-node cluster; it must pass with every check, and
    its 2-rank steps run one rank on each node. Its report."""
    assert "#SBATCH --nodes=2" in script.read_text()
    status, report, output = submit(script, submit_dir, two_nodes.environment())
    assert_validated(status, report, output)
    assert_two_rank_steps_on_both_nodes(submit_dir)
    return report


def assert_two_rank_steps_on_both_nodes(submit_dir: Path) -> None:
    """The 2-rank steps ran one rank on each node, each bound to its node's core."""
    (report_dir,) = submit_dir.glob("validation-pytorch-cpu-*")
    for tag in ("cosmoflow-pytorch-r2", "consistency-r2"):
        ranks = [json.loads((report_dir / tag / f"rank-{r}.json").read_text()) for r in (0, 1)]
        assert [r["host"] for r in ranks] == list(two_nodes.NODES), tag
        assert [r["cpu_affinity"] for r in ranks] == [[0], [1]], tag


@pytest.mark.engine
@pytest.mark.stack
def test_the_shipped_podman_job_script_validates_across_two_nodes(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, object]]],
    tmp_path: Path,
    cpu_recipe_text: str,
    write_recipe: Callable,
) -> None:
    """validate-podman.sbatch as rendered, runtime lines included: one container per rank,
    the 2-rank steps' ranks on different nodes."""
    cpu_stack_build("pytorch-cpu")  # the image the script names, built from this checkout
    script = render_two_node_job(tmp_path, cpu_recipe_text, write_recipe)
    report = validate_on_two_nodes(script, tmp_path / "submit")
    scaling = next(c for c in report["checks"] if c["check"] == "weak-scaling")
    print(f"two-node weak scaling {scaling['measured']}: {scaling['detail']}")


DOCKER_SETUP = PROJECT_ROOT / "scripts" / "setup.d" / "56-docker-two-nodes.sh"


def docker_image_id(image: str, *host: str) -> str | None:
    command = ["docker", *host, "image", "inspect", "--format", "{{.Id}}", image]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.mark.engine
@pytest.mark.stack
def test_the_shipped_docker_job_script_validates_across_two_nodes_each_with_its_engine(
    tmp_path: Path,
    cpu_recipe_text: str,
    write_recipe: Callable,
) -> None:
    """validate-docker.sbatch as rendered: each node runs the ranks in its own Docker engine
    (its own store, network and host name); the DDP ranks talk over Gloo between the nodes."""
    if shutil.which("docker") is None:
        pytest.skip("docker not installed (scripts/setup.d/30-docker.sh)")
    built = docker_image_id(IMAGE)
    if built is None:
        message = f"{IMAGE} is not in the host's Docker store (test_docker_engine.py builds it)"
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI the Docker build runs first: missing means broken
        pytest.skip(message)
    setup = subprocess.run(["bash", str(DOCKER_SETUP)], capture_output=True, text=True)
    assert setup.returncode == 0, setup.stderr
    # Each node has only what was put on it, as a site's nodes do: load the image into the
    # engines that lack it, from one `docker save` stream, both at once.
    hosts = {n: f"--host=unix:///run/docker-two/{n}.sock" for n in two_nodes.NODES}
    lacking = [n for n in two_nodes.NODES if docker_image_id(IMAGE, hosts[n]) != built]
    if lacking:
        save = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
        loads = [
            subprocess.Popen(["docker", hosts[n], "load"], stdin=subprocess.PIPE, text=False)
            for n in lacking
        ]
        assert save.stdout is not None
        while chunk := save.stdout.read(1 << 20):
            for load in loads:
                assert load.stdin is not None
                load.stdin.write(chunk)
        for load in loads:
            assert load.stdin is not None
            load.stdin.close()
        assert save.wait() == 0 and [load.wait(600) for load in loads] == [0] * len(loads)
    for node in two_nodes.NODES:
        assert docker_image_id(IMAGE, hosts[node]) == built, node
    script = render_two_node_job(tmp_path, cpu_recipe_text, write_recipe, "docker")
    assert "run=(docker run --rm -i --network=host" in script.read_text()
    validate_on_two_nodes(script, tmp_path / "submit")
    # The DDP ranks met over Gloo across the veth network, rank 1 in the second node's engine.
    (report_dir,) = (tmp_path / "submit").glob("validation-pytorch-cpu-*")
    rank = json.loads((report_dir / "cosmoflow-pytorch-r2" / "rank-1.json").read_text())
    assert (rank["world_size"], rank["comm_backend"], rank["host"]) == (2, "gloo", "sb2n2")
