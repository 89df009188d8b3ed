"""The example notebooks, headless, in the built CPU image: its kernel, engines from Slurm.

`stackbuild notebooks BUILD_DIR` installs the build's kernel spec, submits the module's
`ipengines` job (srun tasks running the image's Python through the module's wrapper) from
each notebook's directory, and executes the notebook with nbclient against the kernel, which
starts the IPyParallel controller. Here the outputs are checked again, independently of the
command's own checks, and nothing may be left behind: no engines job, no container.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager

from stackbuild.build.validation_record import plan_gaps, read_validation_record
from stackbuild.cli import main
from stackbuild.notebooks import epochs_by_rank, outside_slurm_job, summary, widget_states
from tests.engine.test_kernels import containers, install, run_code
from tests.slurm import two_nodes
from tests.slurm.jobs import needs_slurm

pytestmark = [pytest.mark.engine, pytest.mark.stack, pytest.mark.tools, needs_slurm]

#: CosmoFlow small's epochs (validation/config.py SMALL), which every rank must print.
EPOCHS = 10


def engine_jobs(env: dict[str, str] | None = None) -> list[str]:
    """Slurm jobs of IPyParallel engines still queued or running."""
    out = subprocess.run(
        ["squeue", "--noheader", "--format=%i %j"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=True,
    ).stdout
    return [line for line in out.splitlines() if " ipengines-" in line]


def report_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "notebooks" / "report.json").read_text())


def executed(folder: Path, name: str) -> Any:
    return nbformat.read(folder / "notebooks" / f"{name}.ipynb", as_version=4)


def assert_nothing_left(image_id: str, env: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while (engine_jobs(env) or containers(image_id)) and time.monotonic() < deadline:
        time.sleep(2)
    assert not engine_jobs(env), engine_jobs(env)
    assert not containers(image_id), "containers of the image outlived the notebooks"


def test_both_notebooks_run_in_the_image_with_engines_started_by_slurm(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, object]]],
):
    folder, manifest = cpu_stack_build("pytorch-cpu")
    image = str(manifest["image_id"])
    assert main(["notebooks", str(folder), "--timeout", "600"]) == 0
    report = report_of(folder)
    assert report["passed"] and report["image"] == image
    failed = [c for c in report["checks"] if c["verdict"] != "pass"]
    assert not failed, failed

    # (a) one Horovod job across the 2 engines: each printed its own epochs, they agree.
    book = executed(folder, "distributed_training")
    seen = epochs_by_rank(book)
    assert sorted(seen) == [0, 1] and all(seen[r] == set(range(1, EPOCHS + 1)) for r in seen)
    s = summary(book)
    assert s is not None
    assert (s["world_size"], s["sync"], s["ranks_agree"]) == (2, "horovod", True)
    assert s["comm_backend"] == "horovod-mpi"
    assert s["val_mae"] < s["baseline_mae"]

    # (b) the search: 4 learning rates, spread over both engines, best one named.
    book = executed(folder, "hyperparameter_search")
    s = summary(book)
    assert s is not None
    trials = s["trials"]
    assert len({t["lr"] for t in trials}) >= 4
    assert len({t["pid"] for t in trials}) == 2, "the load-balanced view used one engine"
    assert s["best_lr"] == min(trials, key=lambda t: t["val_mae"])["lr"]
    # (c) the live monitor's progress bar reached the last epoch (the saved widget state).
    bars = [w for w in widget_states(book) if w["model_name"] == "IntProgressModel"]
    assert any(w["max"] == EPOCHS and w["value"] == EPOCHS for w in bars), bars

    # The executed notebooks are the validation's artifacts, recorded for this image.
    record = json.loads((folder / "validation.json").read_text())
    runs = [r for r in record["runs"] if r.get("suites") == ["notebooks"]]
    assert len(runs) == 1 and runs[0]["passed"]
    assert runs[0]["report_json"] == str(folder / "notebooks" / "report.json")
    # publish's plan check reads every recorded report: this one is about this image.
    validation_record = read_validation_record(folder)
    assert validation_record is not None
    ids = {str(manifest.get("digest") or ""), image}
    expect = json.loads((folder / "files/stackbuild-info.json").read_text())["expect"]
    problems = plan_gaps(validation_record, ids, expect)
    assert not [p for p in problems if "notebooks" in p], problems
    assert_nothing_left(image)


def test_distributed_notebook_with_engines_on_two_nodes(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, object]]],
    monkeypatch: pytest.MonkeyPatch,
):
    """The engines are ranks on sb2n1 and sb2n2 (network namespaces of their own); they
    reach the kernel's controller on the host's bridge address, and Horovod over the veths."""
    reason = two_nodes.unusable()
    if reason:
        pytest.skip(reason)
    folder, manifest = cpu_stack_build("pytorch-cpu")
    monkeypatch.setenv("SLURM_CONF", str(two_nodes.CONF))
    args = ["--notebook", "distributed_training", "--controller-address", "10.77.0.1"]
    for option in ("--partition=two", "--nodes=2", "--ntasks-per-node=1"):
        args.append(f"--sbatch-arg={option}")
    assert main(["notebooks", str(folder), *args]) == 0
    s = summary(executed(folder, "distributed_training"))
    assert s is not None
    assert s["hosts"] == list(two_nodes.NODES)
    assert (s["world_size"], s["ranks_agree"]) == (2, True)
    assert_nothing_left(str(manifest["image_id"]), two_nodes.environment())


def test_engines_that_do_not_come_up_fail_in_time_and_are_stopped(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, object]]], tmp_path: Path
):
    """One engine for a notebook that waits for two: a clear error within the limit, and the
    engine that came is stopped with its job."""
    folder, manifest = cpu_stack_build("pytorch-cpu")
    image = str(manifest["image_id"])
    ksm = install(folder, tmp_path / "prefix")
    name = next(iter(ksm.find_kernel_specs()))
    bindir = (
        folder
        / json.loads((Path(ksm.find_kernel_specs()[name]) / "kernel.json").read_text())["metadata"][
            "stackbuild"
        ]["wrapper"]
    )
    # This process's environment (its podman store, e.g. CONTAINERS_STORAGE_CONF).
    env = outside_slurm_job() | {"STACKBUILD_IMAGE_OVERRIDE": image}
    submit = subprocess.run(
        [str(bindir.parent / "ipengines"), "-n", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "job " in submit.stdout
    km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)
    km.start_kernel(cwd=str(tmp_path), env=env)
    try:
        started = time.monotonic()
        with pytest.raises(AssertionError) as failed:
            run_code(
                km, "from validation import notebook as nb\nnb.start_engines(2, timeout=20)", 300
            )
        took = time.monotonic() - started
    finally:
        km.shutdown_kernel(now=False)
    text = str(failed.value)
    assert "EnginesNotUp" in text
    assert "1 of 2 IPyParallel engines registered within 20 s" in text
    assert "ipengines -n 2" in text
    assert took < 20 + 90, f"the error took {took:.0f} s"
    assert_nothing_left(image)
