"""Export an image from local storage: squashfs (Shifter, podman-hpc), OCI archive, or SIF."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from stackbuild.build.images import inspect_image
from stackbuild.errors import StackbuildError, ToolError
from stackbuild.tools import run_tool

FORMATS = ("squashfs", "oci-archive", "sif")


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
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return output


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
    "sif": export_sif,
}
