"""The CycloneDX SBOM: the document from package lists, and one built and published for real."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from stackbuild.build.manifest import MANIFEST_FILE
from stackbuild.build.publish import PUBLISHED_FILE, publish, resolve_source
from stackbuild.build.sbom import (
    SBOM_FILE,
    SBOM_MEDIA_TYPE,
    cyclonedx_json,
    parse_os_release,
    sbom_tag,
    write_sbom,
    write_sbom_artifact,
)
from stackbuild.cli import main
from tests.engine.engine_helpers import plant_secrets, write_context

DEBIAN = [
    {"name": "bash", "version": "5.2.15-2+b7", "arch": "amd64"},
    {"name": "libc6", "version": "2.36-9+deb12u9", "arch": "amd64"},
    {"name": "tzdata", "version": "2024a-0+deb12u1", "arch": "all"},
]
PYTHON = [{"name": "torch", "version": "2.13.0+cpu"}, {"name": "Horovod", "version": "0.28.1"}]
OS = {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"}


def manifest_with(debian: Any = DEBIAN, python: Any = PYTHON, digest: str = "a") -> dict[str, Any]:
    return {
        "image_id": "sha256:" + "b" * 64,
        "digest": "sha256:" + digest * 64,
        "repository": "localhost/stackbuild/pytorch",
        "tags": ["2.13-cpu"],
        "recipe": "cpu",
        "variant": "pytorch-cpu",
        "revision": "0123abc-dirty",
        "built_at": "2026-12-01T09:00:00+00:00",
        "sbom": {"debian": debian, "python": python, "os": OS},
    }


def components(document: str) -> dict[str, dict[str, Any]]:
    return {c["bom-ref"]: c for c in json.loads(document)["components"]}


def test_the_sbom_is_valid_cyclonedx_1_6() -> None:
    document = cyclonedx_json(manifest_with())
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    data = json.loads(document)
    assert data["bomFormat"] == "CycloneDX" and data["specVersion"] == "1.6"


def test_the_schema_check_catches_a_broken_document() -> None:
    data = json.loads(cyclonedx_json(manifest_with()))
    data["components"][0]["type"] = "not-a-type"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(data)) is not None


def test_every_dpkg_and_pip_package_is_a_component_with_its_package_url() -> None:
    found = components(cyclonedx_json(manifest_with()))
    assert "pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64&distro=debian-12" in found
    assert "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12" in found
    assert "pkg:pypi/torch@2.13.0%2Bcpu" in found
    assert "pkg:pypi/horovod@0.28.1" in found  # package URLs normalise PyPI names
    libraries = [c for c in found.values() if c["type"] == "library"]
    assert len(libraries) == len(DEBIAN) + len(PYTHON)
    managers = [c["properties"][0]["value"] for c in libraries]
    assert managers.count("dpkg") == len(DEBIAN) and managers.count("pip") == len(PYTHON)
    (system,) = [c for c in found.values() if c["type"] == "operating-system"]
    assert (system["name"], system["version"]) == ("debian", "12")


def test_the_sbom_describes_the_image_and_its_provenance() -> None:
    data = json.loads(cyclonedx_json(manifest_with()))
    image = data["metadata"]["component"]
    assert image["type"] == "container"
    assert image["name"] == "localhost/stackbuild/pytorch" and image["version"] == "2.13-cpu"
    assert image["purl"].startswith("pkg:oci/pytorch@sha256:" + "a" * 64)
    properties = {p["name"]: p["value"] for p in data["metadata"]["properties"]}
    assert properties["stackbuild:revision"] == "0123abc-dirty"
    assert properties["stackbuild:variant"] == "pytorch-cpu"
    (root,) = [d for d in data["dependencies"] if d["ref"] == "image"]
    assert len(root["dependsOn"]) == len(DEBIAN) + len(PYTHON) + 1


def test_the_serial_number_follows_the_image_digest() -> None:
    first = json.loads(cyclonedx_json(manifest_with()))["serialNumber"]
    assert json.loads(cyclonedx_json(manifest_with()))["serialNumber"] == first
    assert json.loads(cyclonedx_json(manifest_with(digest="c")))["serialNumber"] != first


def test_an_image_without_python_lists_only_its_debian_packages() -> None:
    found = components(cyclonedx_json(manifest_with(python=None)))
    assert not [r for r in found if r.startswith("pkg:pypi/")]
    assert len([r for r in found if r.startswith("pkg:deb/")]) == len(DEBIAN)


def test_os_release_is_parsed_with_quotes_removed() -> None:
    text = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n\n# x\n'
    assert parse_os_release(text) == OS


def test_write_sbom_leaves_no_partial_file(tmp_path: Path) -> None:
    path = write_sbom(manifest_with(), tmp_path)
    assert path == tmp_path / SBOM_FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [SBOM_FILE]


def test_the_artifact_layout_refers_to_the_image_manifest(tmp_path: Path) -> None:
    sbom = cyclonedx_json(manifest_with()).encode()
    subject = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
    digest = write_sbom_artifact(sbom, subject, tmp_path)
    blobs = tmp_path / "blobs" / "sha256"
    artifact = json.loads((blobs / digest.removeprefix("sha256:")).read_bytes())
    assert artifact["artifactType"] == SBOM_MEDIA_TYPE
    assert artifact["subject"]["digest"] == "sha256:" + hashlib.sha256(subject).hexdigest()
    assert artifact["subject"]["size"] == len(subject)
    (layer,) = artifact["layers"]
    assert (blobs / layer["digest"].removeprefix("sha256:")).read_bytes() == sbom
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest


def test_the_sbom_tag_follows_cosigns_scheme() -> None:
    assert sbom_tag("sha256:" + "f" * 64) == "sha256-" + "f" * 64 + ".sbom"


#: A small image with Python and pip from Debian, and the revision label as the template has it.
PYTHON_CONTAINERFILE = """\
FROM {base}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3-pip \\
 && apt-get clean && rm -rf /var/lib/apt/lists/*
ARG SOURCE_REVISION
LABEL org.opencontainers.image.revision=${{SOURCE_REVISION}}
"""


@pytest.fixture(scope="module")
def python_build(
    base_image: str, test_repository: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """`stackbuild build CONTEXT` of the small Python image, the context committed to git."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("sbom")
    context = write_context(
        root / "repo" / "pyimage",
        PYTHON_CONTAINERFILE.format(base=base_image),
        repository=test_repository,
        tags=["sbom-python"],
        base=base_image,
        planted=plant_secrets(root / "secrets"),
        wheel_cache=root / "wheel-cache",
    )
    repo = context.parent
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "context"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    assert main(["build", str(context)]) == 0
    return context, head.stdout.strip()


@pytest.mark.engine
def test_build_labels_the_commit_and_writes_the_sbom_beside_the_manifest(
    python_build: tuple[Path, str],
) -> None:
    context, head = python_build
    manifest = json.loads((context / MANIFEST_FILE).read_text())
    assert manifest["revision"] == head
    labels = json.loads(
        subprocess.run(
            ["podman", "image", "inspect", "--format", "{{json .Labels}}", manifest["image_id"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert labels["org.opencontainers.image.revision"] == head
    assert manifest["sbom_file"] == SBOM_FILE
    document = (context / SBOM_FILE).read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    found = components(document)
    assert any(r.startswith("pkg:pypi/pip@") for r in found)
    assert any(r.startswith("pkg:deb/debian/python3-pip@") for r in found)
    assert any(r.startswith("pkg:deb/debian/dpkg@") for r in found)
    pip_in_image = subprocess.run(
        ["podman", "run", "--rm", manifest["image_id"], "python3", "-m", "pip", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert f"pkg:pypi/pip@{pip_in_image}" in found


@pytest.mark.engine
def test_publish_pushes_the_sbom_as_an_artifact_referring_to_the_image(
    python_build: tuple[Path, str], registry: str
) -> None:
    context, _head = python_build
    pushed = publish(resolve_source(str(context)), f"{registry}/hpc", force=True, tls_verify=False)
    digest = pushed[0].digest
    ref = f"{pushed[0].repository}:{sbom_tag(digest)}"
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        check=True,
    ).stdout
    artifact = json.loads(raw)
    assert artifact["artifactType"] == SBOM_MEDIA_TYPE
    assert artifact["subject"]["digest"] == digest
    (layer,) = artifact["layers"]
    name = pushed[0].repository.split("/", 1)[1]
    blob_url = f"http://{registry}/v2/{name}/blobs/{layer['digest']}"
    with urllib.request.urlopen(blob_url, timeout=30) as response:
        assert response.read() == (context / SBOM_FILE).read_bytes()
    record = json.loads((context / PUBLISHED_FILE).read_text())
    assert record["sboms"] == [
        {"ref": ref, "digest": "sha256:" + hashlib.sha256(raw).hexdigest(), "subject": digest}
    ]
