"""Base images without a registry: reuse local storage, else import a cached or new debootstrap."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stackbuild.build.hostconfig import apt_mirror, cache_dir
from stackbuild.build.images import image_exists
from stackbuild.errors import ToolError
from stackbuild.tools import run_tool

#: Trimmed from a fresh rootfs: apt caches and lists only bloat the image.
TRIM = ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "var/log/*.log", "var/log/apt/*")


@dataclass(frozen=True)
class BaseImage:
    """A base image in local storage and how it got there."""

    ref: str
    source: str  # "local storage", "cache", or "debootstrap"
    tarball: Path | None


def default_base_ref(suite: str, variant: str = "minbase") -> str:
    """The conventional name: localhost/stackbuild/base:<suite>-<variant>."""
    return f"localhost/stackbuild/base:{suite}-{variant}"


def rootfs_tarball(suite: str, variant: str, cache: Path | None = None) -> Path:
    """Where the debootstrapped rootfs tarball is cached."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return (cache or cache_dir()) / "base" / f"debootstrap-{suite}-{variant}-{arch}.tar"


def ensure_base_image(
    suite: str = "bookworm",
    variant: str = "minbase",
    ref: str | None = None,
    *,
    mirror: str | None = None,
    cache: Path | None = None,
    refresh: bool = False,
    say: Callable[[str], None] = lambda _msg: None,
) -> BaseImage:
    """Make sure ref exists locally: reuse it, import the cached rootfs, or debootstrap one."""
    ref = ref or default_base_ref(suite, variant)
    tarball = rootfs_tarball(suite, variant, cache)
    if not refresh and image_exists(ref):
        say(f"{ref} is already in local storage")
        return BaseImage(ref, "local storage", tarball if tarball.is_file() else None)
    if not refresh and tarball.is_file():
        say(f"importing cached rootfs {tarball}")
        try:
            import_rootfs(tarball, ref, suite, variant)
            return BaseImage(ref, "cache", tarball)
        except ToolError as exc:
            say(f"cached rootfs could not be imported ({exc.message.splitlines()[0]}); rebuilding")
            tarball.unlink(missing_ok=True)
    mirror = mirror or apt_mirror(suite)
    say(f"debootstrap --variant={variant} {suite} from {mirror} (about a minute)")
    bootstrap_tarball(suite, variant, mirror, tarball)
    import_rootfs(tarball, ref, suite, variant)
    return BaseImage(ref, "debootstrap", tarball)


def bootstrap_tarball(suite: str, variant: str, mirror: str, tarball: Path) -> None:
    """debootstrap into a temporary directory, trim it, and write it to tarball atomically."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stackbuild-rootfs-", dir=_scratch_dir()))
    try:
        rootfs = work / "rootfs"
        run_tool(
            ["debootstrap", f"--variant={variant}", suite, rootfs, mirror],
            timeout=1800,
        )
        for pattern in TRIM:
            for path in rootfs.glob(pattern):
                if path.is_file() or path.is_symlink():
                    path.unlink()
        partial = tarball.with_name(f".{tarball.name}.{os.getpid()}.partial")
        run_tool(["tar", "--numeric-owner", "--xattrs", "-C", rootfs, "-cf", partial, "."])
        partial.replace(tarball)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)


def import_rootfs(tarball: Path, ref: str, suite: str, variant: str) -> None:
    """podman import a rootfs tarball as ref, with a shell as CMD and labels saying its origin."""
    run_tool(
        [
            "podman",
            "import",
            "--change",
            'CMD ["/bin/bash"]',
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            f"LABEL org.stackbuild.base={suite}-{variant}",
            "--message",
            f"debootstrap --variant={variant} {suite}",
            tarball,
            ref,
        ],
        timeout=600,
    )


def _scratch_dir() -> str:
    """A disk-backed temp directory (debootstrap needs device nodes and ~250 MB)."""
    return "/var/tmp" if Path("/var/tmp").is_dir() else tempfile.gettempdir()
