"""Exports: root-owned squashfs, OCI archive, SIF (clear error without Apptainer)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from stackbuild.build.export import export_image
from stackbuild.errors import StackbuildError, ToolError
from tests.engine.engine_helpers import TinyBuild


def test_existing_output_is_never_overwritten_without_force(tmp_path: Path) -> None:
    out = tmp_path / "image.sqsh"
    out.write_text("keep me")
    with pytest.raises(StackbuildError, match="already exists") as info:
        export_image("localhost/any:tag", "squashfs", out)
    assert "--force" in str(info.value)
    assert out.read_text() == "keep me"


def test_unknown_format_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(StackbuildError, match="oci-archive"):
        export_image("localhost/any:tag", "tar.xz", tmp_path / "x")


@pytest.mark.engine
def test_squashfs_is_root_owned_holds_the_rootfs_and_replaces_with_force(
    tiny_build: TinyBuild, tmp_path: Path
) -> None:
    out = tmp_path / "tiny.sqsh"
    out.write_text("old")
    export_image(tiny_build.spec.image_refs[0], "squashfs", out, force=True)
    assert out.read_bytes()[:4] == b"hsqs"
    listing = subprocess.run(
        ["unsquashfs", "-lls", str(out)], capture_output=True, text=True, check=True
    ).stdout
    entries = [line for line in listing.splitlines() if line[:1] in "-dlcbps" and "/" in line]
    assert any(line.endswith("squashfs-root/home/user/file") for line in entries)
    assert any(line.endswith("squashfs-root/usr/bin/bash") for line in entries)
    owners = {line.split()[1] for line in entries}
    assert owners == {"root/root"}, owners  # /home/user belongs to 1000:1000 in the image
    assert not list(tmp_path.glob(".*partial"))
    # Beside it, the image config in the form Shifter's gateway keeps (a squashfs has none).
    meta = out.with_suffix(".meta").read_text().splitlines()
    assert meta[0] == "FORMAT: squashfs"
    assert any(line.startswith("ENV: PATH=") for line in meta), meta


@pytest.mark.engine
def test_oci_archive_is_readable_by_skopeo(tiny_build: TinyBuild, tmp_path: Path) -> None:
    out = export_image(tiny_build.spec.image_refs[0], "oci-archive", tmp_path / "tiny.tar")
    info = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"oci-archive:{out}"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert info["Labels"]["org.stackbuild.variant"] == "tiny"


@pytest.mark.engine
def test_docker_archive_is_what_apptainer_defs_bootstrap_from(
    tiny_build: TinyBuild, tmp_path: Path
) -> None:
    """`Bootstrap: docker-archive` reads `docker save` tarballs: manifest.json with RepoTags."""
    ref = tiny_build.spec.image_refs[0]
    out = export_image(ref, "docker-archive", tmp_path / "tiny.tar")
    info = json.loads(
        subprocess.run(
            ["skopeo", "inspect", f"docker-archive:{out}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert info["Labels"]["org.stackbuild.variant"] == "tiny"
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == [ref]


@pytest.mark.engine
@pytest.mark.skipif(
    bool(shutil.which("apptainer") or shutil.which("singularity")),
    reason="Apptainer is installed here",
)
def test_sif_without_apptainer_is_a_clear_error(tiny_build: TinyBuild, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="needs apptainer") as info:
        export_image(tiny_build.spec.image_refs[0], "sif", tmp_path / "tiny.sif")
    assert "oci-archive" in (info.value.hint or "")
    assert not (tmp_path / "tiny.sif").exists()


@pytest.mark.engine
def test_export_of_a_missing_image_names_it(tmp_path: Path) -> None:
    with pytest.raises(StackbuildError, match="not in local storage"):
        export_image("localhost/stackbuild-test/absent:none", "oci-archive", tmp_path / "x.tar")


@pytest.mark.engine
def test_export_of_a_build_directory_exports_the_image_it_built(
    tiny_build: TinyBuild, run_cli, tmp_path: Path
) -> None:
    out = tmp_path / "tiny.tar"
    code, _stdout, err = run_cli(
        "export", tiny_build.out_dir, "--to", "oci-archive", "--output", out
    )
    assert code == 0, err
    assert tiny_build.spec.image_refs[0] in err
    assert out.stat().st_size > 0
