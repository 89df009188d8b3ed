"""Base images: reuse, import from the rootfs cache, debootstrap when the cache is bad."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from stackbuild.build import base as base_module
from stackbuild.build.base import default_base_ref, ensure_base_image, rootfs_tarball
from stackbuild.build.images import image_exists, remove_image


def test_default_names_and_cache_location(tmp_path: Path) -> None:
    assert default_base_ref("bookworm") == "localhost/stackbuild/base:bookworm-minbase"
    path = rootfs_tarball("bookworm", "minbase", tmp_path)
    assert path.parent == tmp_path / "base"
    assert path.name.startswith("debootstrap-bookworm-minbase-") and path.suffix == ".tar"


@pytest.fixture
def exported_rootfs(base_image: str, tmp_path: Path) -> Path:
    """A rootfs tarball like the cache holds, made from the base image (no debootstrap)."""
    tarball = tmp_path / "rootfs.tar"
    cid = subprocess.run(
        ["podman", "create", base_image, "true"], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        subprocess.run(["podman", "export", "-o", str(tarball), cid], check=True)
    finally:
        subprocess.run(["podman", "rm", cid], capture_output=True, check=False)
    return tarball


@pytest.mark.engine
def test_an_existing_base_image_is_reused(base_image: str) -> None:
    assert ensure_base_image(ref=base_image).source == "local storage"


@pytest.mark.engine
def test_a_cached_rootfs_is_imported_into_a_fresh_name(
    exported_rootfs: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cached = rootfs_tarball("bookworm", "minbase", cache)
    cached.parent.mkdir(parents=True)
    exported_rootfs.rename(cached)
    ref = f"localhost/stackbuild-test/base-{uuid.uuid4().hex[:8]}:bookworm-minbase"
    try:
        base = ensure_base_image("bookworm", "minbase", ref, cache=cache)
        assert base.source == "cache"
        version = subprocess.run(
            ["podman", "run", "--rm", ref, "cat", "/etc/debian_version"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert version.startswith("12.")
    finally:
        remove_image(ref)


@pytest.mark.engine
def test_a_broken_cache_is_replaced_by_a_new_debootstrap(
    exported_rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cached = rootfs_tarball("bookworm", "minbase", cache)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not a tarball")
    calls: list[tuple[str, str, str]] = []

    def fake_debootstrap(suite: str, variant: str, mirror: str, tarball: Path) -> None:
        calls.append((suite, variant, mirror))
        exported_rootfs.rename(tarball)

    monkeypatch.setattr(base_module, "bootstrap_tarball", fake_debootstrap)
    ref = f"localhost/stackbuild-test/base-{uuid.uuid4().hex[:8]}:bookworm-minbase"
    try:
        base = ensure_base_image("bookworm", "minbase", ref, cache=cache, mirror="http://m/debian")
        assert base.source == "debootstrap"
        assert calls == [("bookworm", "minbase", "http://m/debian")]
        assert image_exists(ref)
    finally:
        remove_image(ref)
