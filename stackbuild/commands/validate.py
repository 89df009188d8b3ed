"""`stackbuild validate`: run the validation workloads and checks on an image or natively."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import click

from stackbuild.errors import StackbuildError
from validation.config import FRAMEWORKS, SIZES, SUITES
from validation.launch import LAUNCHERS, RUNTIMES
from validation.record import RECORD_FILE, build_record, write_record


def _csv(value: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise StackbuildError(
            f"{option}: unknown value(s) {', '.join(bad) or '(empty)'}",
            hint=f"use a comma-separated list of: {', '.join(allowed)}",
        )
    return items


def _frameworks(value: str | None, expect: dict | None, image: str) -> tuple[str, ...]:
    """--framework, or by default the image's own frameworks (both natively): an image of
    one framework has nothing to run for the other."""
    shipped = tuple(f for f in FRAMEWORKS if f in ((expect or {}).get("frameworks") or {}))
    if value is None:
        return shipped or FRAMEWORKS
    chosen = _csv(value, FRAMEWORKS, "--framework")
    missing = [f for f in chosen if shipped and f not in shipped]
    if missing:
        raise StackbuildError(
            f"--framework {value}: {image} has no {', '.join(missing)} (its recipe's "
            f"frameworks: {', '.join(shipped)})",
            hint=f"drop --framework, or use --framework {','.join(shipped)}",
        )
    return chosen


def _ranks(value: str) -> tuple[int, ...]:
    try:
        ranks = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError as exc:
        raise StackbuildError(
            f"--ranks: {value!r} is not a list of integers", hint="e.g. --ranks 1,2"
        ) from exc
    if not ranks or ranks[0] < 1:
        raise StackbuildError(
            f"--ranks: {value!r} must list positive integers", hint="e.g. --ranks 1,2"
        )
    return ranks


def _manifest_digest(manifest: Path) -> tuple[str, Path]:
    path = manifest / "manifest.json" if manifest.is_dir() else manifest
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StackbuildError(
            f"cannot read build manifest {path}: {exc}",
            hint="pass the manifest.json written by `stackbuild build`",
        ) from exc
    digest = data.get("digest") or data.get("image_id")
    if not digest:
        raise StackbuildError(
            f"{path}: neither 'digest' nor 'image_id' is set",
            hint="rebuild the image so the manifest records its digest",
        )
    return str(digest), path.parent / RECORD_FILE


def _manifest_image_id(build_dir: Path) -> str:
    path = build_dir / "manifest.json"
    try:
        image_id = json.loads(path.read_text(encoding="utf-8")).get("image_id")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise StackbuildError(
            f"cannot read build manifest {path}: {exc}", hint="rebuild with `stackbuild build`"
        ) from exc
    if not isinstance(image_id, str) or not image_id:
        raise StackbuildError(f"{path}: no image_id", hint="rebuild with `stackbuild build`")
    return image_id.removeprefix("sha256:")


#: Runtimes whose program can inspect and run a local image (podman-hpc passes through).
_LOCAL_STORE_RUNTIMES = ("podman", "docker", "podman-hpc")


def _image_digest(image: str, runtime: str) -> str:
    if runtime in _LOCAL_STORE_RUNTIMES:
        from stackbuild.tools import run_tool

        result = run_tool([runtime, "image", "inspect", "--format", "{{.Id}}", image], check=False)
        if result.ok and result.stdout.strip():
            digest = result.stdout.strip().splitlines()[0]
            return digest if digest.startswith("sha256:") else f"sha256:{digest}"
    return f"unresolved:{image}"


def _image_expectations(image: str, runtime: str, build_dir: Path | None) -> dict | None:
    """The image's recipe expectations: from the rendered context it was built from, else
    read from the image itself (stackbuild-info.json); None for images that carry none."""
    from validation.plan import INFO_FILE

    text = None
    if build_dir is not None and (build_dir / "files/stackbuild-info.json").is_file():
        text = (build_dir / "files/stackbuild-info.json").read_text(encoding="utf-8")
    elif runtime in _LOCAL_STORE_RUNTIMES:
        from stackbuild.tools import run_tool

        result = run_tool(
            [runtime, "run", "--rm", "--entrypoint", "cat", image, INFO_FILE], check=False
        )
        text = result.stdout if result.ok else None
    try:
        info = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return info.get("expect") if isinstance(info, dict) else None


def _python_has_horovod() -> bool:
    """Whether this Python (the one --native validates) can import Horovod."""
    return importlib.util.find_spec("horovod") is not None


@click.command("validate")
@click.argument("image", required=False)
@click.option("--native", is_flag=True, help="Validate this machine's Python, not an image.")
@click.option(
    "--suite",
    "suites",
    default="cosmoflow,climate,gan",
    show_default=True,
    help=f"Comma-separated: {', '.join(SUITES)}.",
)
@click.option(
    "--framework",
    "frameworks",
    default=None,
    help=f"Comma-separated: {', '.join(FRAMEWORKS)}. [default: the image's frameworks (its "
    "recipe's, from the image); natively both]",
)
@click.option("--ranks", default="1,2", show_default=True, help="Rank counts to run, e.g. 1,2.")
@click.option(
    "--runtime",
    type=click.Choice([r for r in RUNTIMES if r != "native"]),
    default="podman",
    show_default=True,
    help="Container runtime for IMAGE.",
)
@click.option(
    "--launcher",
    type=click.Choice(["auto", *[x for x in LAUNCHERS if x != "none"]]),
    default="auto",
    show_default=True,
    help="How multi-rank jobs start. auto: one pass per engine the stacks ship, "
    "PyTorch DDP under torchrun and Horovod (both frameworks) under horovodrun, "
    "each with its report in --output/LAUNCHER.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Real data (TFRecord/HDF5/npy) instead of synthetic.",
)
@click.option("--config", "size", type=click.Choice(SIZES), default="small", show_default=True)
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("validation-report"),
    show_default=True,
    help="Report directory.",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, exists=True),
    help="Build manifest.json: its digest keys the record, written beside it.",
)
@click.option(
    "--record",
    "record_path",
    type=click.Path(path_type=Path),
    help=f"Where to write the validation record [default: beside --manifest as "
    f"{RECORD_FILE}, else in the report directory].",
)
@click.option(
    "--gpu",
    "expect_gpu",
    is_flag=True,
    help="With --native: require CUDA and NCCL. For an image its recipe's target decides.",
)
@click.option(
    "--mpi",
    "mpi_flavor",
    type=click.Choice(["mpich", "openmpi"]),
    default="mpich",
    show_default=True,
    help="MPI flavour of mpirun (how it passes variables).",
)
@click.option(
    "--min-scaling-efficiency",
    type=click.FloatRange(0, 1),
    default=None,
    help="Weak-scaling efficiency below which the scaling check fails "
    "[default: the recipe's jobs.min_scaling_efficiency, else 0.6].",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=1800,
    show_default=True,
    help="Seconds one job (one training run) may take: then it is killed with its ranks "
    "and containers, and its check fails saying so.",
)
def validate_command(
    image: str | None,
    native: bool,
    suites: str,
    frameworks: str,
    ranks: str,
    runtime: str,
    launcher: str,
    data_dir: Path | None,
    size: str,
    out_dir: Path,
    manifest: Path | None,
    record_path: Path | None,
    expect_gpu: bool,
    mpi_flavor: str,
    min_scaling_efficiency: float | None,
    timeout_s: float,
) -> None:
    """Train the science workloads on IMAGE (or --native) and check the results.

    IMAGE is an image reference or a build directory (with the manifest.json written by
    `stackbuild build`): then exactly that image id is run, and the validation record that
    `stackbuild publish` requires is written beside the manifest.
    """
    # The runner needs numpy, which the rest of the CLI must not: imported only here.
    from validation.report import failure_lines, summary_line, write_html, write_json
    from validation.runner import ValidationRequest, launcher_passes, run_validation

    build_dir = None
    if image and (Path(image) / "manifest.json").is_file():
        # A build directory: validate exactly the image it built (by id), record beside it.
        build_dir = Path(image)
        manifest = manifest or build_dir
        image = _manifest_image_id(build_dir)
        engine = json.loads((build_dir / "manifest.json").read_text(encoding="utf-8")).get("engine")
        if engine == "docker" and runtime != "docker":  # the image is in Docker's store only
            raise StackbuildError(
                f"{build_dir} was built with Docker; {runtime} cannot see Docker's images",
                hint="validate it with --runtime docker",
            )
    if bool(image) == native:
        raise StackbuildError(
            "give either an IMAGE or --native (not both, not neither)",
            hint="e.g. `stackbuild validate --native --suite cosmoflow`",
        )
    if native and runtime != "podman":
        raise StackbuildError("--runtime applies to images only", hint="drop --runtime")
    if manifest is not None:
        digest, default_record = _manifest_digest(manifest)
    elif image:
        digest, default_record = _image_digest(image, runtime), out_dir / RECORD_FILE
    else:
        import socket

        digest, default_record = f"native:{socket.gethostname()}", out_dir / RECORD_FILE
    from validation.plan import DEFAULT_MIN_SCALING_EFFICIENCY, host_has_gpu, needs_gpu

    expect = _image_expectations(image, runtime, build_dir) if image else None
    if expect is not None:
        # The image's target decides: GPU checks for GPU targets, AVX-512 for KNL, etc.
        expect_gpu = needs_gpu(expect)
    if min_scaling_efficiency is None:
        min_scaling_efficiency = float(
            (expect or {}).get("min_scaling_efficiency", DEFAULT_MIN_SCALING_EFFICIENCY)
        )
    suite_list = _csv(suites, SUITES, "--suite")
    rank_list = _ranks(ranks)
    # An image of our stacks has Horovod (the probe checks its build); natively, this Python
    # may not: auto then validates torch.distributed only, and says so.
    horovod = not native or _python_has_horovod()
    if not horovod and launcher == "horovodrun":
        raise StackbuildError(
            f"--native with --launcher horovodrun runs Horovod, which is not installed in "
            f"{sys.executable}",
            hint="install Horovod into that environment, or use --launcher torchrun",
        )
    fws = _frameworks(frameworks, expect, str(build_dir or image))
    passes = launcher_passes(launcher, fws, rank_list, horovod=horovod)
    if not horovod and launcher == "auto":
        click.echo(
            f"note: no Horovod in {sys.executable}: validating torch.distributed only "
            "(TensorFlow multi-rank runs are skipped); install Horovod there for its pass",
            err=True,
        )
    failed = False
    for pass_launcher, pass_frameworks in passes:
        pass_dir = out_dir / pass_launcher if launcher == "auto" else out_dir
        request = ValidationRequest(
            out_dir=pass_dir,
            image=image,
            suites=suite_list,
            frameworks=pass_frameworks,
            ranks=rank_list,
            runtime="native" if native else runtime,
            launcher=pass_launcher,
            data_dir=data_dir,
            size=size,
            expect_gpu=expect_gpu,
            expect=expect,
            gpu_devices=expect_gpu and host_has_gpu(),
            mpi_flavor=mpi_flavor,
            min_scaling_efficiency=min_scaling_efficiency,
            timeout_s=timeout_s,
        )
        try:
            report = run_validation(request)
        except (ValueError, FileNotFoundError) as exc:
            raise StackbuildError(
                f"validation could not start: {exc}",
                hint="check --runtime/--launcher are installed (natively, Horovod runs need "
                "Horovod in that Python; --launcher torchrun validates PyTorch DDP only)",
            ) from exc
        write_json(report, pass_dir / "report.json")
        write_html(report, pass_dir / "report.html")
        record = write_record(build_record(report, digest, pass_dir), record_path or default_record)
        click.echo(
            f"{pass_launcher} ({', '.join(pass_frameworks)}): {summary_line(report)}; "
            f"report {pass_dir / 'report.html'}; record {record}"
        )
        if not report["passed"]:
            failed = True
            for line in failure_lines(report):
                click.echo(line, err=True)
    if build_dir is not None and record_path is None:
        click.echo(not_pinned_after_failure(build_dir) if failed else pin_validated(build_dir))
    if failed:
        raise click.exceptions.Exit(1)


def not_pinned_after_failure(build_dir: Path) -> str:
    """What the user files run after a failed validation: an earlier validated image, or
    the unpinned tag, as before."""
    from stackbuild.build.manifest import read_manifest
    from stackbuild.render.pin import read_pin

    old = read_pin(build_dir)
    if old is None:
        return "user files not pinned: the validation failed (publish refuses this image too)"
    if old.image_id == read_manifest(build_dir).get("image_id"):
        return (
            f"user files stay pinned to {old.reference}, which an earlier validation passed; "
            "publish refuses it until a validation passes again"
        )
    return (
        "user files not pinned to this image: the validation failed; they still run the "
        f"validated {old.digest_reference or old.reference}"
    )


def pin_validated(build_dir: Path) -> str:
    """After a pass: give the image its immutable tag, write pin.json, re-render the user
    files to name it; or say why not (the plan is not covered, e.g. one suite only)."""
    from stackbuild.build.manifest import read_manifest
    from stackbuild.build.publish import PublishRefused, PublishSource, check_validation
    from stackbuild.render.pin import ImagePin, immutable_tag, read_pin, write_pin
    from stackbuild.render.renderer import rerender_user_files
    from stackbuild.tools import run_tool

    manifest = read_manifest(build_dir)
    image_id = str(manifest["image_id"])
    source = PublishSource(image_id.removeprefix("sha256:"), (), manifest, build_dir)
    try:
        check_validation(source)
    except PublishRefused as exc:
        return f"user files not pinned: {exc.message}"
    old = read_pin(build_dir)
    if old is not None and old.image_id == image_id and old.digest_reference:
        return f"user files stay pinned to the published {old.digest_reference}"
    tag = immutable_tag(str(manifest["tags"][0]), image_id)
    reference = f"{manifest['repository']}:{tag}"
    tool = "docker" if manifest.get("engine") == "docker" else "podman"
    result = run_tool([tool, "tag", image_id.removeprefix("sha256:"), reference], check=False)
    if not result.ok:
        return f"user files not pinned: {tool} tag {reference} failed: {result.tail(1)}"
    pin = ImagePin(str(manifest["recipe_hash"]), image_id, reference)
    write_pin(build_dir, pin)
    return f"validated image tagged {reference}; " + rerender_user_files(build_dir, pin)
