"""The image's software bill of materials: its packages, as a CycloneDX document.

`collect_packages` runs the built image to list its Debian (dpkg-query) and Python (pip)
packages; `cyclonedx_json` turns a build manifest holding those lists into CycloneDX 1.6
JSON, written beside the manifest as sbom.cdx.json. `stackbuild publish` pushes it next to
the image as an OCI artifact that refers to the image's digest (`write_sbom_artifact`).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cyclonedx.model import Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from stackbuild import __version__
from stackbuild.build.docker_engine import run_in_docker_image
from stackbuild.tools import run_tool

SBOM_FILE = "sbom.cdx.json"
#: The media type of a CycloneDX JSON document (IANA registration, cyclonedx.org/specification).
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
#: Namespace for serial numbers: one image digest always gets the same serial number.
SERIAL_NAMESPACE = uuid.UUID("2f0f6a4e-5b39-4f0e-9a55-7d3c1f0b8a61")

DPKG_QUERY = r"dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n'"
#: The first Python with pip: PATH (images put their venv first), then common venv places.
PIP_LIST = (
    "for py in python3 python /opt/*/bin/python3 /usr/local/bin/python3; do "
    "if command -v $py >/dev/null 2>&1 && $py -m pip --version >/dev/null 2>&1; then "
    "exec $py -m pip list --format json; fi; done; echo null"
)
OS_RELEASE = "cat /etc/os-release"


@dataclass(frozen=True)
class ImagePackages:
    """What is installed in an image; None where the image has no such package manager."""

    debian: list[dict[str, str]] | None
    python: list[dict[str, str]] | None
    os_release: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        """The manifest's `sbom` entry."""
        return {"debian": self.debian, "python": self.python, "os": self.os_release}


def collect_packages(image: str, engine: str = "podman") -> ImagePackages:
    """Debian packages (dpkg-query), Python packages (pip list) and os-release of image."""
    deb = _run_in_image(image, DPKG_QUERY, engine)
    debian = None
    if deb is not None:
        debian = []
        for line in deb.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                debian.append({"name": parts[0], "version": parts[1], "arch": parts[2]})
    pip_out = (_run_in_image(image, PIP_LIST, engine) or "").strip()
    python = None
    if pip_out:
        try:
            listed = json.loads(pip_out.splitlines()[-1])
        except json.JSONDecodeError:
            listed = None
        if isinstance(listed, list):
            python = [{"name": str(p["name"]), "version": str(p["version"])} for p in listed]
    os_release = parse_os_release(_run_in_image(image, OS_RELEASE, engine) or "")
    return ImagePackages(debian, python, os_release)


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines of /etc/os-release (quotes removed)."""
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().isidentifier():
            found[key.strip()] = value.strip().strip("\"'")
    return found


def _run_in_image(image: str, script: str, engine: str = "podman") -> str | None:
    """Run a shell snippet in a throwaway container without network; None if it failed."""
    if engine == "docker":  # Docker keeps its own image store; podman and buildah share one
        return run_in_docker_image(image, script)
    result = run_tool(
        ["podman", "run", "--rm", "--network=none", "--entrypoint", "/bin/sh", image, "-c", script],
        check=False,
        timeout=300,
    )
    return result.stdout if result.ok else None


def cyclonedx_json(manifest: dict[str, Any]) -> str:
    """CycloneDX 1.6 JSON for the image a build manifest describes, from its package lists."""
    packages = manifest.get("sbom") or {}
    os_release = packages.get("os") or {}
    distro = _distro(os_release)
    image = _image_component(manifest)
    components = []
    if os_release.get("ID"):
        components.append(
            Component(
                type=ComponentType.OPERATING_SYSTEM,
                name=os_release["ID"],
                version=os_release.get("VERSION_ID") or None,
                description=os_release.get("PRETTY_NAME") or None,
                bom_ref=f"os:{distro or os_release['ID']}",
            )
        )
    for deb in packages.get("debian") or []:
        qualifiers = {"arch": deb["arch"]} if deb.get("arch") else {}
        if distro:
            qualifiers["distro"] = distro
        vendor = os_release.get("ID") or "debian"
        purl = PackageURL("deb", vendor, deb["name"], deb["version"], qualifiers or None)
        components.append(_library(deb["name"], deb["version"], purl, "dpkg"))
    for pkg in packages.get("python") or []:
        purl = PackageURL("pypi", None, pkg["name"], pkg["version"])
        components.append(_library(pkg["name"], pkg["version"], purl, "pip"))
    bom = Bom(
        serial_number=uuid.uuid5(SERIAL_NAMESPACE, str(manifest.get("digest") or "")),
        metadata=BomMetaData(
            component=image,
            timestamp=_timestamp(manifest.get("built_at")),
            properties=[
                Property(name=f"stackbuild:{key}", value=str(manifest[key]))
                for key in ("recipe", "variant", "revision", "recipe_hash", "image_id")
                if manifest.get(key)
            ],
        ),
        components=components,
    )
    bom.metadata.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="stackbuild", version=__version__)
    )
    bom.register_dependency(image, components)
    with warnings.catch_warnings():
        # The library warns about unrelated optional fields; the schema test is the check.
        warnings.simplefilter("ignore")
        return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def _library(name: str, version: str, purl: PackageURL, source: str) -> Component:
    return Component(
        type=ComponentType.LIBRARY,
        name=name,
        version=version,
        purl=purl,
        bom_ref=purl.to_string(),
        properties=[Property(name="stackbuild:package-manager", value=source)],
    )


def _image_component(manifest: dict[str, Any]) -> Component:
    """The image itself: repository, first tag, and an OCI package URL by digest."""
    repository = str(manifest.get("repository") or "image")
    tags = manifest.get("tags") or []
    digest = str(manifest.get("digest") or "")
    purl = None
    if digest:
        qualifiers = {"repository_url": repository}
        if tags:
            qualifiers["tag"] = str(tags[0])
        purl = PackageURL("oci", None, repository.rsplit("/", 1)[-1], digest, qualifiers)
    return Component(
        type=ComponentType.CONTAINER,
        name=repository,
        version=str(tags[0]) if tags else None,
        purl=purl,
        bom_ref="image",
    )


def _distro(os_release: dict[str, str]) -> str:
    """The purl `distro` qualifier: debian-12, from ID and VERSION_ID."""
    ident, version = os_release.get("ID"), os_release.get("VERSION_ID")
    return f"{ident}-{version}" if ident and version else ""


def _timestamp(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def write_sbom(manifest: dict[str, Any], out_dir: Path) -> Path:
    """Write <out_dir>/sbom.cdx.json atomically; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SBOM_FILE
    partial = out_dir / f".{SBOM_FILE}.{os.getpid()}.partial"
    partial.write_text(cyclonedx_json(manifest), encoding="utf-8")
    partial.replace(path)
    return path


#: OCI media types of the SBOM artifact (OCI image-spec 1.1 "artifacts" guidance).
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def sbom_tag(image_digest: str) -> str:
    """The tag the SBOM of image_digest is pushed under: sha256-<hex>.sbom (cosign's scheme)."""
    return image_digest.replace(":", "-") + ".sbom"


def write_sbom_artifact(sbom: bytes, subject: bytes, folder: Path) -> str:
    """An OCI layout at folder holding the SBOM as an artifact that refers to subject.

    subject is the image's manifest as the registry stores it; the artifact names it in its
    `subject` field, so registries with the OCI Referrers API list it under the image.
    Returns the artifact manifest's digest.
    """
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def blob(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": f"sha256:{digest}", "size": len(data)}

    subject_type = json.loads(subject).get("mediaType") or OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_MEDIA_TYPE,
        "config": {"mediaType": OCI_EMPTY, **blob(b"{}"), "data": "e30="},
        "layers": [
            {
                "mediaType": SBOM_MEDIA_TYPE,
                **blob(sbom),
                "annotations": {"org.opencontainers.image.title": SBOM_FILE},
            }
        ],
        "subject": {
            "mediaType": subject_type,
            "digest": f"sha256:{hashlib.sha256(subject).hexdigest()}",
            "size": len(subject),
        },
    }
    described = blob(json.dumps(manifest, indent=2).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "artifactType": SBOM_MEDIA_TYPE, **described}],
    }
    (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
    (folder / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}', encoding="utf-8")
    return str(described["digest"])
