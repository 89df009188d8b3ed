"""Plain helpers for the engine tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from stackbuild.build.context import BuildSpec
from stackbuild.build.engines import BuildResult
from stackbuild.build.hostconfig import SYSTEM_CA_BUNDLE

#: The recipe name of every test image: its label lets the session remove them all.
TEST_RECIPE = "stackbuild-engine-test"


@dataclass(frozen=True)
class Planted:
    """Secret files handed to a build, and the strings that must never reach a layer."""

    ca_bundle: Path
    pip_conf: Path
    markers: tuple[str, ...]


def plant_secrets(folder: Path) -> Planted:
    """A CA bundle (the host's plus a marker) and a pip.conf holding a fake credential."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex
    ca_marker = f"STACKBUILD-FAKE-CA-{tag}"
    password = f"TopSecretPw{tag}"
    host_ca = SYSTEM_CA_BUNDLE.read_text() if SYSTEM_CA_BUNDLE.is_file() else ""
    ca_bundle = folder / "ca-bundle.pem"
    ca_bundle.write_text(f"# {ca_marker}\n{host_ca}")
    pip_conf = folder / "pip.conf"
    pip_conf.write_text(f"[global]\nindex-url = https://builder:{password}@pypi.invalid/simple\n")
    return Planted(ca_bundle, pip_conf, (ca_marker, password))


def write_context(
    folder: Path,
    containerfile: str,
    *,
    repository: str,
    tags: list[str],
    base: str,
    planted: Planted,
    wheel_cache: Path,
    wheelhouse: Path | None = None,
) -> Path:
    """Write a build context in the shape the renderer produces (Containerfile + variant.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Containerfile").write_text(containerfile)
    variant = {
        "recipe": TEST_RECIPE,
        "recipe_hash": "0" * 16,
        "variant": folder.name,
        "image": {"repository": repository, "tags": tags},
        "base": {"image": base, "bootstrap": {"suite": "bookworm", "variant": "minbase"}},
        "build": {
            "secrets": {"ca_bundle": str(planted.ca_bundle), "pip_conf": str(planted.pip_conf)},
            "volumes": {
                "wheelhouse": {
                    "host": str(wheelhouse) if wheelhouse else None,
                    "target": "/wheelhouse",
                },
                "wheel_cache": {"host": str(wheel_cache), "target": "/cache/wheels"},
            },
            "build_args": {"GREETING": "hello"},
        },
    }
    (folder / "variant.json").write_text(json.dumps(variant, indent=2))
    return folder


#: What every tiny image does: read both secrets the way a pip step would, use both build
#: volumes, and leave a file owned by a non-root user (for the squashfs -all-root check).
TINY_CONTAINERFILE = """\
FROM {base}
ARG GREETING
RUN --mount=type=secret,id=ca_bundle,target=/run/secrets/ca_bundle \\
    --mount=type=secret,id=pip_conf,target=/etc/pip.conf \\
    grep -q STACKBUILD-FAKE-CA /run/secrets/ca_bundle && grep -q index-url /etc/pip.conf \\
    && cp /run/secrets/ca_bundle /tmp/ca-copy && rm /tmp/ca-copy \\
    && echo "$GREETING" > /greeting && echo built > /cache/wheels/{stamp}.txt
RUN mkdir -p /home/user && echo mine > /home/user/file && chown -R 1000:1000 /home/user
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def image_names(repository: str) -> list[str]:
    """repository:tag names in local storage for one repository."""
    out = subprocess.run(
        ["podman", "images", "--format", "{{.Repository}}:{{.Tag}}", repository],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [n for n in out.split() if not n.endswith(":<none>")]


@dataclass(frozen=True)
class TinyBuild:
    """A built, tagged tiny image with its manifest."""

    spec: BuildSpec
    result: BuildResult
    out_dir: Path
    manifest: dict[str, object]
    planted: Planted
    wheel_cache: Path


def leaked_markers(image: str, markers: tuple[str, ...], workdir: Path) -> list[str]:
    """Save image as an uncompressed OCI layout; list every marker found in any blob."""
    layout = workdir / "oci-layout"
    subprocess.run(
        ["podman", "save", "--uncompressed", "--format", "oci-dir", "-o", str(layout), image],
        capture_output=True,
        check=True,
    )
    found = []
    for blob in sorted((layout / "blobs" / "sha256").iterdir()):
        data = blob.read_bytes()  # layers are plain tars here, so file contents are raw bytes
        found += [f"{m} in blob {blob.name[:12]}" for m in markers if m.encode() in data]
    return found
