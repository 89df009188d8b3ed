"""`stackbuild notebooks BUILD_DIR`: the example notebooks against a built image, on Slurm."""

from __future__ import annotations

from pathlib import Path

import click

from stackbuild.notebooks import NOTEBOOK_DIR, NOTEBOOKS, run_notebooks


@click.command("notebooks")
@click.argument("build_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-n", "--engines", type=click.IntRange(min=2), default=2, show_default=True)
@click.option(
    "--notebook",
    "names",
    multiple=True,
    type=click.Choice(NOTEBOOKS),
    help="Run only this notebook (repeatable) [default: all].",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=10),
    default=900,
    show_default=True,
    help="Seconds one cell may run, and the engines may take to come up.",
)
@click.option(
    "--sbatch-arg",
    "sbatch_args",
    multiple=True,
    help="Passed to sbatch for the engines job (repeatable), e.g. --sbatch-arg=--partition=debug.",
)
@click.option(
    "--controller-address",
    help="The address engines on compute nodes reach this node at [default: its hostname].",
)
def notebooks_command(
    build_dir: Path,
    engines: int,
    names: tuple[str, ...],
    timeout_s: float,
    sbatch_args: tuple[str, ...],
    controller_address: str | None,
) -> None:
    """Run the example notebooks headless in BUILD_DIR's image, with Slurm's engines.

    Each notebook's kernel is the build's kernel spec (the image's Python through the
    module's wrapper); its IPyParallel engines are a Slurm job submitted with the module's
    `ipengines`. Both run exactly the built image (by ID). The executed notebooks, a report
    and a run in the build's validation record go to BUILD_DIR/notebooks/; the exit status is
    1 if a check failed.
    """
    from stackbuild.commands.validate import _manifest_digest
    from validation.record import build_record, write_record

    report = run_notebooks(
        build_dir, engines, timeout_s, sbatch_args, names or NOTEBOOKS, controller_address
    )
    out = build_dir / NOTEBOOK_DIR
    digest, record_path = _manifest_digest(build_dir)
    record = write_record(build_record(report, digest, out), record_path)
    for r in report["notebooks"]:
        click.echo(
            f"{r['notebook']}: {'passed' if r['passed'] else 'FAILED'} in {r['wall_s']} s "
            f"(engines job {r['engines_job']}) -> {r['executed']}"
        )
        for c in r["checks"]:
            if c["verdict"] != "pass":
                click.echo(f"  failed {c['check']} ({c['subject']}): {c['detail']}", err=True)
        if r["failure"]:
            click.echo(
                f"  stopped: {r['failure']}; engines' output {r['engines_output']}", err=True
            )
    click.echo(f"report {out / 'report.html'}; record {record}")
    if not report["passed"]:
        raise SystemExit(1)
