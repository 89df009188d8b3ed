"""Export an image from local storage: squashfs (Shifter, podman-hpc), OCI archive, SIF, or
podman-hpc's own squashfs store (`podman-hpc migrate`)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from stackbuild.build.images import LocalImage, inspect_image
from stackbuild.errors import StackbuildError, ToolError
from stackbuild.tools import run_tool

FORMATS = ("squashfs", "oci-archive", "docker-archive", "sif")
#: `export --to podman-hpc`: into podman-hpc's store, not a file of ours
PODMAN_HPC = "podman-hpc"
PODMAN_HPC_HINT = (
    "run scripts/setup-host.sh as root (scripts/setup.d/35-podman-hpc.sh installs NERSC's "
    "podman-hpc and this machine's site config), or load the module that provides podman-hpc"
)


def export_image(image: str, fmt: str, output: Path, *, force: bool = False) -> Path:
    """Write image to output in fmt; refuse to overwrite unless force; write atomically."""
    exporter = EXPORTERS.get(fmt)
    if exporter is None:
        raise StackbuildError(f"unknown export format {fmt!r}", hint=f"use one of {FORMATS}")
    if output.exists() and not force:
        raise StackbuildError(f"{output} already exists", hint="pass --force to overwrite it")
    inspect_image(image)  # a clear error if the image is not there
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        exporter(image, partial)
        if fmt == "squashfs":
            write_shifter_meta(image, shifter_meta_path(output))
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return output


def shifter_meta_path(squashfs: Path) -> Path:
    """Where the image's run settings go beside its squashfs (Shifter keeps X.squashfs + X.meta)."""
    return squashfs.with_suffix(".meta")


def shifter_meta(config: Mapping[str, object]) -> str:
    """The image config in the form Shifter's image gateway writes beside a squashfs
    (FORMAT, ENTRY, WORKDIR, one ENV line per variable), so the image keeps its PATH,
    LD_LIBRARY_PATH and the rest of its ENV; a squashfs holds files only."""
    lines = ["FORMAT: squashfs"]
    entrypoint = config.get("Entrypoint") or []
    if entrypoint:
        lines.append(f"ENTRY: {shlex.join(str(a) for a in entrypoint)}")  # type: ignore[union-attr]
    if config.get("WorkingDir"):
        lines.append(f"WORKDIR: {config['WorkingDir']}")
    lines += [f"ENV: {item}" for item in config.get("Env") or []]  # type: ignore[union-attr]
    return "\n".join(lines) + "\n"


def write_shifter_meta(image: str, path: Path) -> Path:
    """Write shifter_meta of image's config to path (atomically)."""
    result = run_tool(["podman", "image", "inspect", "--format", "{{json .Config}}", image])
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(shifter_meta(json.loads(result.stdout)), encoding="utf-8")
    partial.replace(path)
    return path


def export_squashfs(image: str, output: Path) -> None:
    """Flatten image into a root-owned squashfs (mksquashfs ROOTFS OUT -all-root -noappend)."""
    if os.geteuid() != 0:
        raise StackbuildError(
            "squashfs export mounts the image's rootfs and needs root",
            hint="run as root, or inside `podman unshare` for rootless storage",
        )
    container = run_tool(["podman", "create", "--entrypoint", "/bin/true", image]).stdout.strip()
    try:
        rootfs = run_tool(["podman", "mount", container]).stdout.strip()
        try:
            run_tool(
                ["mksquashfs", rootfs, output, "-all-root", "-noappend", "-no-progress"],
                timeout=3600,
            )
        finally:
            run_tool(["podman", "umount", container], check=False)
    finally:
        run_tool(["podman", "rm", "--force", container], check=False)


def export_oci_archive(image: str, output: Path) -> None:
    """podman save --format oci-archive (keeps the image name as the archive's ref)."""
    run_tool(["podman", "save", "--format", "oci-archive", "-o", output, image], timeout=3600)


def export_docker_archive(image: str, output: Path) -> None:
    """podman save --format docker-archive: what apptainer.def's `Bootstrap: docker-archive`
    reads (and `docker load`)."""
    run_tool(["podman", "save", "--format", "docker-archive", "-o", output, image], timeout=3600)


def export_sif(image: str, output: Path) -> None:
    """apptainer build OUT.sif oci-archive://... (needs Apptainer or SingularityCE)."""
    tool = next((t for t in ("apptainer", "singularity") if shutil.which(t)), None)
    if tool is None:
        raise ToolError(
            "SIF export needs apptainer (or singularity), which is not installed here",
            hint="install Apptainer (https://apptainer.org/docs/admin/main/installation.html), "
            "or export --to oci-archive here and run `apptainer build OUT.sif "
            "oci-archive://ARCHIVE` where Apptainer exists",
        )
    with tempfile.TemporaryDirectory(prefix="stackbuild-sif-", dir=output.parent) as tmp:
        archive = Path(tmp) / "image.tar"
        export_oci_archive(image, archive)
        run_tool([tool, "build", "--force", output, f"oci-archive://{archive}"], timeout=3600)


EXPORTERS: dict[str, Callable[[str, Path], None]] = {
    "squashfs": export_squashfs,
    "oci-archive": export_oci_archive,
    "docker-archive": export_docker_archive,
    "sif": export_sif,
}


@dataclass(frozen=True)
class MigratedImage:
    """An image that `podman-hpc migrate` squashed into podman-hpc's shared store."""

    image_id: str
    store: Path
    squashfs: Path


def podman_hpc_squash_dir(
    squash_dir: Path | None = None, environ: Mapping[str, str] = os.environ
) -> Path:
    """The store `podman-hpc migrate` writes to, by podman-hpc 1.2.2's own lookup order."""
    if squash_dir is not None:
        return squash_dir
    if environ.get("SQUASH_DIR"):
        return Path(environ["SQUASH_DIR"])
    return Path(environ.get("SCRATCH") or "/tmp") / "storage"


def migrated_squashfs(store: Path, image_id: str) -> Path | None:
    """The squashfs of image_id in a podman-hpc store (images.json, top layer's link), if any."""
    try:
        images = json.loads((store / "overlay-images" / "images.json").read_text())
        record = next(r for r in images if r.get("id") == image_id)
        link = (store / "overlay" / str(record["layer"]) / "link").read_text().strip()
    except (OSError, ValueError, StopIteration, KeyError):
        return None
    squashfs = store / "overlay" / "l" / f"{link}.squash"
    return squashfs if squashfs.is_file() and squashfs.stat().st_size > 0 else None


def copy_into_podman_hpc(local: LocalImage, squash_dir: Path) -> None:
    """Put a podman image into podman-hpc's own store (its graph_root), names and all, unless
    it is there or migrated already.

    podman-hpc keeps a store of its own, as at NERSC: it mounts with fuse-overlayfs (its
    mount_program), and a store opened once with a mount program stays on it for every
    later podman call too (c/storage's `.has-mount-program`), which made every podman build
    here 3 times slower when podman-hpc shared podman's store.
    """
    exists = run_tool(
        [PODMAN_HPC, "--squash-dir", squash_dir, "image", "exists", local.id], check=False
    )
    if exists.ok:
        return
    # docker-archive keeps every name of the image (-m: several), and its config: same id.
    names = list(local.names) or [local.id]
    save = ["podman", "save", "--format", "docker-archive", *(["-m"] if len(names) > 1 else [])]
    with subprocess.Popen([*save, *names], stdout=subprocess.PIPE) as saving:
        assert saving.stdout is not None
        with subprocess.Popen(
            [PODMAN_HPC, "--squash-dir", str(squash_dir), "load"],
            stdin=saving.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as loading:
            # Only the loader holds the pipe now: if it stops, the save gets SIGPIPE.
            saving.stdout.close()
            _, error = loading.communicate(timeout=3600)
        if loading.returncode != 0:
            saving.kill()
        saved = saving.wait()
    if saved != 0 or loading.returncode != 0:
        raise ToolError(
            f"could not copy {local.id[:12]} from podman's store into podman-hpc's "
            f"(podman save exit {saved}, podman-hpc load exit {loading.returncode}): "
            f"{error.strip()[-800:]}",
            hint=f"check `podman-hpc infohpc` (its graph_root) and the free disk space there; "
            f"{PODMAN_HPC_HINT}",
        )


def migrate_podman_hpc(image: str, squash_dir: Path | None = None) -> MigratedImage:
    """`podman-hpc migrate IMAGE`: squash it into podman-hpc's store; say where it went."""
    if shutil.which(PODMAN_HPC) is None:
        raise ToolError(f"{PODMAN_HPC} is not installed here (not on PATH)", hint=PODMAN_HPC_HINT)
    local = inspect_image(image)
    store = podman_hpc_squash_dir(squash_dir)
    copy_into_podman_hpc(local, store)
    # Passed explicitly, so that what we report is where podman-hpc wrote.
    result = run_tool(
        [PODMAN_HPC, "--squash-dir", store, "migrate", image], check=False, timeout=3600
    )
    # podman-hpc 1.2.2 exits 0 even where migrate failed ("Image ... not found", "Squash
    # Failed"): the store itself says whether the image is there.
    squashfs = migrated_squashfs(store, local.id)
    if squashfs is None:
        detail = result.tail(10) or "(no output)"
        raise ToolError(
            f"`podman-hpc migrate {image}` left no squashfs of {local.id[:12]} in {store} "
            f"(exit {result.returncode}):\n{detail}",
            hint="podman-hpc must see the image in its graph_root (`podman-hpc infohpc`: "
            "stackbuild copies it there from podman's store first) and have a static "
            f"mksquashfs (mksquashfs_bin); {PODMAN_HPC_HINT}",
        )
    return MigratedImage(image_id=local.id, store=store, squashfs=squashfs)
