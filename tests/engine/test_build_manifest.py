"""The manifest written next to a built image, and secrets that never reach a layer."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from stackbuild.build.context import BuildSpec
from stackbuild.build.engines import PodmanBuilder
from stackbuild.build.manifest import MANIFEST_FILE, SCHEMA, read_manifest
from stackbuild.errors import StackbuildError
from tests.engine.engine_helpers import TinyBuild, leaked_markers


def test_reading_a_missing_manifest_says_to_build_first(tmp_path: Path) -> None:
    with pytest.raises(StackbuildError, match="does not exist") as info:
        read_manifest(tmp_path)
    assert "stackbuild build" in str(info.value)


def test_reading_a_foreign_json_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"image": "x"}))
    with pytest.raises(StackbuildError, match="not a stackbuild manifest"):
        read_manifest(tmp_path)


@pytest.mark.engine
def test_manifest_records_identity_provenance_size_and_sbom(tiny_build: TinyBuild) -> None:
    manifest = read_manifest(tiny_build.out_dir)
    assert manifest["schema"] == SCHEMA
    assert manifest["image_id"] == f"sha256:{tiny_build.result.image_id}"
    assert str(manifest["digest"]).startswith("sha256:")
    assert manifest["tags"] == ["tiny", "tiny-extra"]
    assert manifest["refs"] == tiny_build.spec.image_refs
    assert manifest["recipe_hash"] == tiny_build.spec.recipe_hash
    assert manifest["variant"] == "tiny"
    assert manifest["build_duration_s"] > 0
    assert manifest["size_bytes"] > 10_000_000
    assert Path(manifest["build_log"]).is_file()
    debian = {p["name"]: p for p in manifest["sbom"]["debian"]}
    assert "bash" in debian and "dpkg" in debian
    assert manifest["sbom"]["python"] is None  # minbase has no Python


@pytest.mark.engine
def test_build_volumes_and_secrets_were_usable_during_the_build(tiny_build: TinyBuild) -> None:
    # The RUN step grep'd both secrets and wrote its stamp into the host's wheel cache.
    assert list(tiny_build.wheel_cache.glob("*.txt"))
    greeting = subprocess.run(
        ["podman", "run", "--rm", tiny_build.result.image_id, "cat", "/greeting"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert greeting.strip() == "hello"


@pytest.mark.engine
def test_secrets_are_absent_from_every_layer_and_the_config(
    tiny_build: TinyBuild, tmp_path: Path
) -> None:
    image = tiny_build.result.image_id
    assert leaked_markers(image, tiny_build.planted.markers, tmp_path) == []


@pytest.mark.engine
def test_the_leak_check_finds_a_secret_copied_into_a_layer(
    context_factory: Callable[..., BuildSpec], tmp_path: Path
) -> None:
    spec = context_factory(
        "RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf cp /etc/pip.conf /leak\n",
        tags=["leaky"],
    )
    result = PodmanBuilder().build(spec, log_path=tmp_path / "leaky.log")
    password = next(m for m in _markers(spec) if m.startswith("TopSecretPw"))
    assert leaked_markers(result.image_id, (password,), tmp_path)


def _markers(spec: BuildSpec) -> list[str]:
    """The planted strings, read back from the secret files."""
    text = spec.secrets["pip_conf"].read_text() + spec.secrets["ca_bundle"].read_text()[:200]
    return [w.split("@")[0].split(":")[-1] for w in text.split() if "TopSecretPw" in w]
