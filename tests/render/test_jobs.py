"""Slurm job scripts: each runs the planned validation steps under srun, then the evaluation."""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.recipe import expand_matrix, load_recipe
from stackbuild.recipe.matrix import Variant
from stackbuild.render.pin import ImagePin
from stackbuild.render.renderer import render_files
from stackbuild.render.writers import JOB_RUNTIMES, job_request
from validation.plan import evaluate_arguments, plan_jobs

SHIPPED = sorted((PROJECT_ROOT / "recipes").glob("*.yaml"))


def job_scripts(variant: Variant, site: Path | None = None) -> dict[str, str]:
    """runtime -> the rendered validate-RUNTIME.sbatch."""
    files = render_files(variant, ["jobs"], site)
    return {
        f.path.removeprefix("jobs/validate-").removesuffix(".sbatch"): f.content.decode()
        for f in files
    }


def commands(script: str) -> list[list[str]]:
    """The script's lines as words, continuation lines joined (comments dropped)."""
    joined = script.replace("\\\n", " ")
    return [
        shlex.split(line)
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def steps(script: str) -> list[list[str]]:
    """`step TAG NODES RANKS_PER_NODE ARGS...` calls."""
    return [words[1:] for words in commands(script) if words[0] == "step"]


def evaluation(script: str) -> list[str]:
    """The closing `... -m validation evaluate ...` line's words after `validation`."""
    line = next(w for w in commands(script) if "evaluate" in w and w[0] != "step")
    return line[line.index("validation") + 1 :]


def variants(recipe: Path) -> list[Variant]:
    return expand_matrix(load_recipe(recipe))


def run_shifter_job(
    variant: Variant, tmp_path: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """The variant's validate-shifter.sbatch, run by bash with stand-in srun and shifter
    (calls logged to tmp_path/calls.log) as a 2-task job submitted from tmp_path."""
    script = tmp_path / "validate.sbatch"
    script.write_text(job_scripts(variant)["shifter"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", STUB_SRUN), ("shifter", STUB_SHIFTER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_LOG": str(tmp_path / "calls.log"),
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_NTASKS": "2",
        **env,
    }
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)


def published(variant: Variant) -> Variant:
    """variant as `stackbuild publish` pins it: registry digest and immutable tag."""
    repository = f"registry.example.org/stackbuild/{variant.image_name.rsplit('/', 1)[-1]}"
    pin = ImagePin(
        variant.build_digest,
        "sha256:" + "ab" * 32,
        f"{repository}:{variant.image_tag}-abababababab",
        f"{repository}@sha256:{'cd' * 32}",
    )
    return dataclasses.replace(variant, pin=pin)


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.stem)
def test_every_script_runs_the_planned_steps_and_evaluates_the_same_plan(recipe: Path) -> None:
    for variant in variants(recipe):
        for runtime, script in job_scripts(variant).items():
            request = job_request(variant, runtime)
            planned = [j for j in plan_jobs(request) if not j.skipped]
            calls = steps(script)
            assert [c[0] for c in calls] == [j.tag for j in planned]
            for call, job in zip(calls, planned, strict=True):
                args = call[3:]
                assert args[: len(job.module_args)] == job.module_args
                if job.kind == "probe":
                    assert args[-2:] == ["--out", f"$report_dir/probe-{job.framework}.json"]
                else:
                    assert args[args.index("--tag") + 1] == job.tag
                    assert args[-4:] == ["--out", "$report_dir", "--threads", "$threads"]
            assert evaluation(script) == [
                *evaluate_arguments(request),
                "--out",
                "$report_dir",
            ]


def test_tags_are_distinct_and_rank_counts_follow_the_recipe() -> None:
    variant = next(v for v in variants(PROJECT_ROOT / "recipes/gpu.yaml") if "tensorflow" in v.name)
    jobs = variant.settings.jobs
    calls = steps(job_scripts(variant)["shifter"])
    assert len({c[0] for c in calls}) == len(calls)
    for tag, nodes, per_node, *args in calls:
        if tag.endswith(f"-r{jobs.nodes * jobs.ranks_per_node}"):
            assert (int(nodes), int(per_node)) == (jobs.nodes, jobs.ranks_per_node)
            assert args[args.index("--sync") + 1] == "horovod"  # TensorFlow: Horovod (MPI)
        else:
            assert (nodes, per_node) == ("1", "1") and "--sync" not in args


def test_pytorch_multi_rank_steps_use_ddp_and_a_consistency_pair() -> None:
    variant = next(v for v in variants(PROJECT_ROOT / "recipes/cpu.yaml") if "pytorch" in v.name)
    calls = {c[0]: c[3:] for c in steps(job_scripts(variant)["apptainer"])}
    assert calls["cosmoflow-pytorch-r2"][calls["cosmoflow-pytorch-r2"].index("--sync") + 1] == (
        "ddp"
    )
    assert {"consistency-r1", "consistency-r2", "cosmoflow-pytorch-r1"} <= set(calls)


def test_each_runtime_starts_the_image_python_under_srun() -> None:
    cpu = next(v for v in variants(PROJECT_ROOT / "recipes/cpu.yaml") if "pytorch" in v.name)
    gpu = next(v for v in variants(PROJECT_ROOT / "recipes/gpu.yaml") if "pytorch" in v.name)
    scripts = job_scripts(cpu)
    assert set(scripts) == set(JOB_RUNTIMES)
    for script in scripts.values():
        assert (
            '--mpi=pmi2 --kill-on-bad-exit=1 \\\n    "${image_python[@]}" -m validation' in script
        )
        assert script.rstrip().endswith('--out "$report_dir"')  # the verdict is the exit status
    # Every script runs each task through run-image, the module wrappers' own lines.
    for script in scripts.values():
        assert 'image_python=("$report_dir/run-image" python)' in script
    assert "#SBATCH --image=docker:localhost/stackbuild/pytorch:2.13-cpu" in scripts["shifter"]
    assert 'run=(shifter --image=docker:"${image#docker:}" --module=mpich' in scripts["shifter"]
    assert "  run+=(--mpi)\n" in scripts["podman-hpc"]
    # --mpi brings --network=host itself, and podman refuses a second one ("cannot set
    # multiple networks"): host networking only for processes outside srun.
    base = next(line for line in scripts["podman-hpc"].splitlines() if line.startswith("run=("))
    assert "--network" not in base, base
    assert "else\n  run+=(--network=host)\n" in scripts["podman-hpc"]
    assert "run=(apptainer exec --pwd=" in scripts["apptainer"]
    assert "run+=(--preserve-fds=1)" in scripts["podman"]
    assert "--preserve-fds" not in scripts["docker"]  # dockerd's child: Gloo, not PMI
    on_gpu = job_scripts(gpu)
    assert "run=(podman-hpc run --rm -i --gpu " in on_gpu["podman-hpc"]
    assert "run=(apptainer exec --nv " in on_gpu["apptainer"]
    assert "'--module=gpu,nccl-plugin'" in on_gpu["shifter"]
    assert all("--expect-gpu" in evaluation(s) for s in on_gpu.values())
    assert '--cpus-per-task="$cpus_per_rank"' in on_gpu["shifter"]  # srun does not inherit it


def test_open_mpi_stacks_use_pmix(cpu_recipe_text: str, write_recipe: Callable) -> None:
    text = cpu_recipe_text.replace("mpi: {flavor: mpich}", "mpi: {flavor: openmpi}")
    variant = variants(write_recipe(text))[0]
    scripts = job_scripts(variant)
    assert all("--mpi=pmix" in s and "--mpi=pmi2" not in s for s in scripts.values())
    assert "  run+=(--openmpi-pmix)\n" in scripts["podman-hpc"]


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.stem)
def test_scripts_are_valid_bash(recipe: Path, tmp_path: Path) -> None:
    for variant in variants(recipe):
        for runtime, script in job_scripts(variant).items():
            path = tmp_path / f"{variant.name}-{runtime}.sbatch"
            path.write_text(script)
            proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
            assert proc.returncode == 0, proc.stderr


STUB_SRUN = """#!/bin/sh
# Records its arguments; fails the step whose --tag is $FAIL_TAG.
printf '%s\\n' "$*" >> "$STUB_LOG"
case " $* " in *" --tag $FAIL_TAG "*) exit 3 ;; esac
exit 0
"""
STUB_SHIFTER = """#!/bin/sh
# Only the evaluation runs shifter outside srun (the stub srun runs nothing).
printf 'shifter %s\\n' "$*" >> "$STUB_LOG"
exit "$EVALUATE_STATUS"
"""


@pytest.mark.parametrize("evaluate_status", [0, 1])
def test_a_failed_step_is_recorded_and_the_job_exits_with_the_verdict(
    tmp_path: Path, evaluate_status: int
) -> None:
    variant = published(
        next(v for v in variants(PROJECT_ROOT / "recipes/cpu.yaml") if "pytorch" in v.name)
    )
    env = {
        "FAIL_TAG": "cosmoflow-pytorch-r2",
        "EVALUATE_STATUS": str(evaluate_status),
        "SLURM_JOB_ID": "77",
        "SLURM_CPUS_ON_NODE": "8",
    }
    proc = run_shifter_job(variant, tmp_path, env)
    assert proc.returncode == evaluate_status, proc.stderr
    report_dir = tmp_path / "validation-pytorch-cpu-77"
    status = {p.stem: p.read_text() for p in (report_dir / "steps").glob("*.json")}
    assert '"returncode": 3' in status.pop("cosmoflow-pytorch-r2")
    assert status and all('"returncode": 0' in s for s in status.values())
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == len(status) + 2
    assert "--ntasks=2 --ntasks-per-node=1 --cpus-per-task=8" in calls[2]  # 2 nodes x 1 rank
    assert calls[-1].startswith(f"shifter --image=docker:{variant.pin.reference}")
    assert " -- python -m validation evaluate " in calls[-1]


def test_too_small_an_allocation_is_refused_before_any_step(tmp_path: Path) -> None:
    variant = next(v for v in variants(PROJECT_ROOT / "recipes/cpu.yaml") if "pytorch" in v.name)
    script = tmp_path / "validate.sbatch"
    script.write_text(job_scripts(variant)["shifter"])
    env = {"PATH": os.environ["PATH"], "SLURM_NTASKS": "1", "SLURM_SUBMIT_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "needs 2 tasks" in proc.stderr


def test_a_shifter_job_of_an_unpublished_image_stops_before_any_step(tmp_path: Path) -> None:
    """Shifter pulls from a registry: a localhost/ image cannot run there, and says why."""
    variant = next(v for v in variants(PROJECT_ROOT / "recipes/cpu.yaml") if "pytorch" in v.name)
    proc = run_shifter_job(variant, tmp_path, {"SLURM_JOB_ID": "78"})
    assert proc.returncode != 0
    assert "Shifter pulls images from a registry" in proc.stderr
    assert "stackbuild publish" in proc.stderr
