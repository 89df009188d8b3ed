"""`stackbuild doctor | base | build | export | publish`: the container-engine stage."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stackbuild.build.base import default_base_ref, ensure_base_image
from stackbuild.build.context import VARIANT_FILE, BuildSpec, load_build_spec
from stackbuild.build.docker_engine import ensure_docker_bases, save_docker_image
from stackbuild.build.doctor import run_doctor
from stackbuild.build.engines import BUILDERS, default_builder, get_builder
from stackbuild.build.export import FORMATS, PODMAN_HPC, export_image, migrate_podman_hpc
from stackbuild.build.images import image_exists, inspect_image
from stackbuild.build.manifest import (
    MANIFEST_FILE,
    REVISION_ARG,
    build_manifest,
    source_revision,
    write_manifest,
)
from stackbuild.build.progress import BuildProgress
from stackbuild.build.publish import PUBLISHED_FILE, PublishSource, publish, resolve_source
from stackbuild.build.sbom import SBOM_FILE, write_sbom
from stackbuild.build.validation_record import VALIDATION_FILE
from stackbuild.commands.recipes import load_variants
from stackbuild.errors import StackbuildError
from stackbuild.recipe import Variant, select_variant
from stackbuild.render.pin import PIN_FILE, read_pin
from stackbuild.render.renderer import render_variant
from stackbuild.tools import run_tool

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
STATUS_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def say(message: str) -> None:
    """Progress messages go to stderr, results to stdout."""
    err.print(escape(message))


@click.command("doctor")
@click.option("--image", help="Image to test-run containers with (default: the bookworm base).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor_command(image: str | None, as_json: bool) -> None:
    """Check container runtime, ulimits, storage, network and CA bundle; say what to change."""
    checks = run_doctor(image)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = Table("check", "status", "detail", "fix")
        for c in checks:
            style = STATUS_STYLE[c.status]
            table.add_row(c.name, f"[{style}]{c.status}[/]", escape(c.detail), escape(c.fix))
        console.print(table)
    broken = [c.name for c in checks if c.broken]
    if broken:
        raise StackbuildError(
            f"not ready to build: {', '.join(broken)}", hint="apply the fixes in the table above"
        )


@click.command("base")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite.")
@click.option("--variant", default="minbase", show_default=True, help="debootstrap --variant.")
@click.option("--tag", help="Image name [default: localhost/stackbuild/base:SUITE-VARIANT].")
@click.option("--mirror", help="Debian mirror [default: the one this host's apt uses].")
@click.option("--refresh", is_flag=True, help="Debootstrap again even if image or cache exist.")
def base_command(
    suite: str, variant: str, tag: str | None, mirror: str | None, refresh: bool
) -> None:
    """Make the Debian base image: reuse it, import the cached rootfs, or debootstrap one."""
    base = ensure_base_image(
        suite,
        variant,
        tag or default_base_ref(suite, variant),
        mirror=mirror,
        refresh=refresh,
        say=say,
    )
    console.print(f"{base.ref}  (from {base.source})")


@click.command("build")
@click.argument("target")
@click.option(
    "--variant",
    "-V",
    "variants",
    multiple=True,
    help="With a RECIPE: build only this variant (repeatable) [default: all].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    help="With a RECIPE: render into OUTPUT/<variant>/ [default: out/<recipe>].",
)
@click.option(
    "--templates",
    type=click.Path(path_type=Path),
    help="With a RECIPE: site template directory.",
)
@click.option(
    "--builder",
    "--engine",
    "engine",
    type=click.Choice(sorted(BUILDERS)),
    help="Container engine [default: the first of podman, buildah, docker, apptainer that "
    "works here].",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="With a CONTEXT: where manifest.json and the build log go [default: CONTEXT].",
)
@click.option("-v", "--verbose", is_flag=True, help="Echo every build output line.")
def build_command(
    target: str,
    variants: tuple[str, ...],
    output: Path | None,
    templates: Path | None,
    engine: str | None,
    out: Path | None,
    verbose: bool,
) -> None:
    """Build TARGET: a recipe (name or path; rendered first) or a rendered context directory.

    Each image is tagged only when its whole build succeeded; manifest.json (tags, image id,
    digest, versions) and the build log are written into the variant's directory.
    """
    path = Path(target)
    if (path / VARIANT_FILE).is_file():
        if variants or output or templates:
            raise StackbuildError(
                f"{target} is a rendered context: --variant, --output and --templates "
                "apply to recipes only",
                hint="drop them, or pass the recipe instead of the rendered directory",
            )
        # A rendered context is its own source: files git ignores (out/) count as changes.
        contexts = [(path, source_revision(path, count_ignored=True))]
    elif path.is_dir():
        raise StackbuildError(
            f"{target} is a directory without {VARIANT_FILE}, so not a rendered build context",
            hint="pass a recipe (name or .yaml), or render one first with `stackbuild render`",
        )
    else:
        if out is not None:
            raise StackbuildError(
                "--out applies to a rendered context only",
                hint="with a recipe, choose the directory with --output",
            )
        all_variants = load_variants(target)
        chosen = [select_variant(all_variants, v) for v in variants] if variants else all_variants
        root = output or Path("out") / Path(all_variants[0].recipe_name)
        # Everything a recipe names lies in its folder's tree: that tree's state is the revision.
        revision = source_revision(all_variants[0].recipe_path.resolve().parent)
        contexts = []
        for variant in chosen:
            variant = keep_pin(variant, root / variant.name)
            rendered = render_variant(variant, root, None, templates, keep=BUILD_OUTPUTS)
            contexts.append((rendered, revision))
            say(f"rendered {variant.name} -> {rendered}")
    for context, revision in contexts:
        build_context(context, engine, out, verbose, revision=revision)


#: What a build directory holds besides the rendered files; kept when it is rendered again.
BUILD_OUTPUTS = (MANIFEST_FILE, SBOM_FILE, VALIDATION_FILE, PIN_FILE, PUBLISHED_FILE, "logs")


def keep_pin(variant: Variant, folder: Path) -> Variant:
    """A rebuild leaves user files on the image validated last (pin.json) until it passes."""
    pin = read_pin(folder)
    if pin is None:
        return variant
    if pin.recipe_hash != variant.build_digest:
        say(
            f"note: {variant.name}'s recipe changed since the build validated in {folder}: "
            f"its module files, wrappers and job scripts keep running {pin.reference} until "
            "this build is validated (`stackbuild validate`)"
        )
    return dataclasses.replace(variant, pin=pin)


def say_if_tag_moved(spec: BuildSpec, before: str, after: str) -> None:
    """Say what a rebuild did to the tag the recipe names and to the user files."""
    if not before or before.removeprefix("sha256:") == after.removeprefix("sha256:"):
        return
    tag = spec.image_refs[0]
    pin = read_pin(spec.context_dir)
    if pin is not None:
        say(
            f"note: {tag} now names the new image {after[:12]}, not validated yet; the user "
            f"files in {spec.context_dir} still run the validated {pin.reference}"
        )
    else:
        say(
            f"note: {tag} moved from image {before[:12]} to {after[:12]}; the module files "
            f"and wrappers rendered in {spec.context_dir} name {tag} and run the new image, "
            "which is not validated: validate it before users load the module"
        )


def build_context(
    context: Path, engine: str | None, out: Path | None, verbose: bool, *, revision: str
) -> None:
    """Build one rendered context; write its SBOM and manifest beside it."""
    spec = load_build_spec(context)
    # The revision label's value; a build_args entry in variant.json is the user's and wins.
    spec = dataclasses.replace(spec, build_args={REVISION_ARG: revision, **spec.build_args})
    builder = get_builder(engine) if engine else default_builder()
    builder.check_available()
    if builder.name == "docker":  # Docker has its own image store: import the base there
        ensure_docker_bases(spec, say)
    else:
        ensure_bases(spec)
    out = out or spec.context_dir
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log_path = out.resolve() / "logs" / f"build-{stamp}-{os.getpid()}.log"
    say(f"building {', '.join(spec.image_refs)} with {builder.name}; log: {log_path}")
    before = _tagged_id(builder.name, spec.image_refs[0])
    with sigterm_as_interrupt(), BuildProgress(err, echo=verbose) as progress:
        result = builder.build(spec, log_path=log_path, on_line=progress.on_line)
    say_if_tag_moved(spec, before, result.image_id)
    manifest = build_manifest(spec, result)
    sbom = write_sbom(manifest, out)
    path = write_manifest(manifest, out)
    console.print(
        f"built {', '.join(result.refs)}  id {result.image_id[:12]}  "
        f"{result.duration_s:.0f} s  revision {manifest['revision']}  manifest {path}  sbom {sbom}"
    )


def _tagged_id(engine: str, ref: str) -> str:
    """The image ID a tag names in the engine's store now ('' if none)."""
    tool = "docker" if engine == "docker" else "podman"
    result = run_tool([tool, "image", "inspect", "--format", "{{.Id}}", ref], check=False)
    return result.stdout.strip().splitlines()[0] if result.ok and result.stdout.strip() else ""


def ensure_bases(spec: BuildSpec) -> None:
    """Every FROM image is local: debootstrap the one the recipe says how to make."""
    for ref in spec.base_images:
        if image_exists(ref):
            continue
        if spec.bootstrap is None or ref != spec.base_image:
            raise StackbuildError(
                f"base image {ref} is not in local storage (and no registry is used)",
                hint="load it (podman load / podman import), or give the recipe base.bootstrap",
            )
        boot = spec.bootstrap
        ensure_base_image(boot.suite, boot.variant, ref, mirror=boot.mirror, say=say)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so a killed build stops its engine and tags nothing."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("export")
@click.argument("image")
@click.option(
    "--to", "fmt", type=click.Choice([*FORMATS, PODMAN_HPC]), required=True, help="Output format."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
@click.option(
    "--squash-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="podman-hpc: its squashfs store (default: $SQUASH_DIR, $SCRATCH/storage, /tmp/storage).",
)
def export_command(
    image: str, fmt: str, output: Path | None, force: bool, squash_dir: Path | None
) -> None:
    """Export IMAGE as a squashfs (Shifter), an OCI archive, a SIF, or into podman-hpc.

    IMAGE is an image reference or a build directory (manifest.json from `stackbuild build`).
    `--to podman-hpc` runs `podman-hpc migrate IMAGE` (no OUTPUT: podman-hpc's own store).
    """
    if (Path(image) / "manifest.json").is_file():
        source = resolve_source(image)
        if source.engine == "docker":
            export_docker_build(source, fmt, output, force)
            return
    image = exported_ref(image)
    if fmt == PODMAN_HPC:
        say(f"podman-hpc migrate {image} ...")
        migrated = migrate_podman_hpc(image, squash_dir)
        size = migrated.squashfs.stat().st_size / 2**20
        console.print(f"{migrated.squashfs}  ({size:.1f} MiB, podman-hpc store {migrated.store})")
        say(f"run it with: podman-hpc run --rm {image} ...  (srun ... podman-hpc run --rm --mpi)")
        return
    if output is None:
        raise StackbuildError(f"--to {fmt} writes a file: give it with -o/--output")
    say(f"exporting {image} to {fmt} ...")
    path = export_image(image, fmt, output, force=force)
    console.print(f"{path}  ({path.stat().st_size / 2**20:.1f} MiB)")


def export_docker_build(source: PublishSource, fmt: str, output: Path | None, force: bool) -> None:
    """A Docker-built image leaves Docker's store as a docker-archive (`docker save`); the
    other formats read podman's store, which does not hold it."""
    folder = source.manifest_dir
    if fmt != "docker-archive":
        raise StackbuildError(
            f"{folder} was built with Docker: --to {fmt} reads podman's image store, which does "
            "not hold it",
            hint=f"export it --to docker-archive, then `podman load -i ARCHIVE` and export "
            f"that image --to {fmt}; or publish it and let the site pull it "
            f"(Shifter and podman-hpc pull from a registry)",
        )
    if output is None:
        raise StackbuildError(f"--to {fmt} writes a file: give it with -o/--output")
    if output.exists() and not force:
        raise StackbuildError(f"{output} already exists", hint="pass --force to overwrite it")
    say(f"exporting {source.image_id[:12]} from Docker's store to {fmt} ...")
    save_docker_image(source.image_id, source.refs, output)
    console.print(f"{output}  ({output.stat().st_size / 2**20:.1f} MiB)")


def exported_ref(image: str) -> str:
    """IMAGE itself, or for a build directory the tag it built, if it still names that image."""
    if not (Path(image) / "manifest.json").is_file():
        return image
    source = resolve_source(image)
    ref = source.refs[0]
    if inspect_image(ref).id != source.image_id:
        raise StackbuildError(
            f"{ref} no longer names the image built in {image} ({source.image_id[:12]})",
            hint="build again, or export the image by its id",
        )
    return ref


@click.command("publish")
@click.argument("image")
@click.option("--registry", required=True, help="HOST[:PORT]/NAMESPACE to push to.")
@click.option(
    "--manifest",
    type=click.Path(exists=True, path_type=Path),
    help="manifest.json (or its folder) when IMAGE is an image reference.",
)
@click.option("--force", is_flag=True, help="Publish even without a passing validation record.")
@click.option("--tls-verify/--no-tls-verify", default=True, show_default=True)
@click.option("--retries", default=4, show_default=True, help="Tries per tag.")
def publish_command(
    image: str,
    registry: str,
    manifest: Path | None,
    force: bool,
    tls_verify: bool,
    retries: int,
) -> None:
    """Push every tag of IMAGE (a build output dir, or an image reference) to a registry."""
    source = resolve_source(image, manifest)
    pushed = publish(
        source, registry, force=force, tls_verify=tls_verify, attempts=retries, say=say
    )
    for tag in pushed:
        console.print(f"{tag.ref}  {tag.pinned}")


BUILD_COMMANDS: list[click.Command] = [
    doctor_command,
    base_command,
    build_command,
    export_command,
    publish_command,
]
