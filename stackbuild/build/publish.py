"""Publish a built image: push every tag to a registry, only once validation passed; its SBOM
beside it."""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackbuild.build.docker_engine import (
    inspect_docker_image,
    push_docker_image,
    relabel_docker_image,
)
from stackbuild.build.images import inspect_image, relabel_image
from stackbuild.build.manifest import MANIFEST_FILE, read_manifest
from stackbuild.build.sbom import (
    SBOM_FILE,
    collect_packages,
    cyclonedx_json,
    sbom_tag,
    write_sbom_artifact,
)
from stackbuild.build.validation_record import (
    VALIDATION_FILE,
    plan_gaps,
    read_validation_record,
)
from stackbuild.errors import StackbuildError, ToolError
from stackbuild.render.pin import ImagePin, immutable_tag, write_pin
from stackbuild.render.renderer import rerender_user_files
from stackbuild.tools import ToolResult, run_tool

PUBLISHED_FILE = "published.json"
#: Failures that another try will not fix.
PERMANENT = re.compile(
    r"unauthorized|authentication required|denied|x509|certificate|"
    r"server gave HTTP response to HTTPS client|invalid reference|name invalid",
    re.IGNORECASE,
)


class PublishRefused(StackbuildError):
    """The image has no passing validation record and --force was not given."""


@dataclass(frozen=True)
class PublishedTag:
    """One pushed tag and the digest the registry stored it under."""

    ref: str
    digest: str

    @property
    def repository(self) -> str:
        """registry/name, without the tag."""
        return self.ref.rsplit(":", 1)[0]

    @property
    def pinned(self) -> str:
        """registry/name@digest: the reference that never moves."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class PublishSource:
    """What to push: an image ID, its tags, and (if known) its manifest."""

    image_id: str
    refs: tuple[str, ...]
    manifest: dict[str, Any] | None
    manifest_dir: Path | None
    engine: str = "podman"  # whose image store holds it: podman (and buildah) or docker


def resolve_source(image: str, manifest_path: Path | None = None) -> PublishSource:
    """IMAGE is a build output dir / manifest.json, or a local image reference."""
    path = Path(image)
    if manifest_path is None and (path.is_dir() or path.name == MANIFEST_FILE) and path.exists():
        manifest_path = path
    if manifest_path is not None:
        manifest = read_manifest(manifest_path)
        folder = manifest_path if manifest_path.is_dir() else manifest_path.parent
        return PublishSource(
            manifest["image_id"].removeprefix("sha256:"),
            tuple(manifest["refs"]),
            manifest,
            folder,
            "docker" if manifest.get("engine") == "docker" else "podman",
        )
    local = inspect_image(image)
    # Every local tag of the image is published, as for a manifest's refs.
    return PublishSource(local.id, local.names, None, None)


def check_validation(source: PublishSource) -> str:
    """Why publishing is allowed; raise PublishRefused when validation has not passed."""
    fix = "run the validation stage for this image, or pass --force to publish anyway"
    if source.manifest is None or source.manifest_dir is None:
        raise PublishRefused(
            "no manifest given, so no validation record can be found for this image",
            hint=f"pass the build output directory (with {MANIFEST_FILE}); or {fix}",
        )
    record = read_validation_record(source.manifest_dir / VALIDATION_FILE)
    if record is None:
        raise PublishRefused(
            f"no validation record at {source.manifest_dir / VALIDATION_FILE}", hint=fix
        )
    if not record.covers(source.manifest):
        raise PublishRefused(
            f"{record.path} is about image {record.image_digest}, "
            f"not {source.manifest.get('digest')} ({source.manifest.get('image_id')})",
            hint=fix,
        )
    if not record.passed:
        not_validated = [v for v in record.verdicts if v not in ("passed", "failed")]
        if not_validated and "failed" not in record.verdicts:
            raise PublishRefused(
                f"this image is not validated: {'; '.join(not_validated)} ({record.path})",
                hint="validate it where it can run (a GPU image on a GPU node, a KNL image on "
                "an AVX-512 CPU), or pass --force to publish anyway (the pushed image is "
                "then labelled io.stackbuild.validated=false)",
            )
        raise PublishRefused(f"validation failed for this image ({record.path})", hint=fix)
    expect = _expectations(source.manifest_dir)
    if expect is None:
        return f"validation passed ({record.path}; no recipe plan for this image to check)"
    ids = {str(source.manifest.get("digest") or ""), str(source.manifest.get("image_id") or "")}
    gaps = plan_gaps(record, ids, expect)
    if gaps:
        raise PublishRefused(
            f"the validation record does not cover this image's plan: {'; '.join(gaps)}",
            hint="run `stackbuild validate BUILD_DIR` (every suite, 1 and 2 ranks, every "
            f"engine), or pass --force to publish anyway ({record.path})",
        )
    return f"validation passed: every planned run ({record.path})"


def _expectations(folder: Path) -> dict[str, Any] | None:
    """The recipe's expectations of the image built in folder (its rendered context)."""
    try:
        info = json.loads((folder / "files" / "stackbuild-info.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    expect = info.get("expect") if isinstance(info, dict) else None
    return expect if isinstance(expect, dict) else None


def destination(ref: str, registry: str) -> str:
    """localhost/stackbuild/tensorflow:2.21-cpu -> REGISTRY/tensorflow:2.21-cpu."""
    name_tag = ref.rsplit("/", 1)[-1]
    return f"{registry.rstrip('/')}/{name_tag}"


def publish(
    source: PublishSource,
    registry: str,
    *,
    force: bool = False,
    tls_verify: bool = True,
    attempts: int = 4,
    backoff_s: float = 2.0,
    say: Callable[[str], None] = lambda _msg: None,
) -> list[PublishedTag]:
    """Push every tag of source to registry (by image ID, so exactly the validated image)."""
    forced = None
    try:
        say(check_validation(source))
    except PublishRefused as exc:
        if not force:
            raise
        forced = exc.message
        say(f"--force: publishing anyway ({exc.message})")
    if not source.refs:
        raise StackbuildError(f"image {source.image_id[:12]} has no tags to publish")
    docker = source.engine == "docker"
    (inspect_docker_image if docker else inspect_image)(source.image_id)
    if forced is not None:
        # What is pushed says it was not validated: same layers, two more labels.
        labelled = (relabel_docker_image if docker else relabel_image)(
            source.image_id,
            {"io.stackbuild.validated": "false", "io.stackbuild.validation": forced},
        )
        say(f"--force: pushing {labelled[:12]}, labelled io.stackbuild.validated=false")
        source = replace(source, image_id=labelled)
    pushed = []
    refs = list(source.refs)
    if forced is None and source.manifest is not None and source.refs:
        # The tag that user files name: never moved by a rebuild (stackbuild.render.pin).
        repository, tag = source.refs[0].rsplit(":", 1)
        refs.append(f"{repository}:{immutable_tag(tag, source.manifest['image_id'])}")
    if docker and not tls_verify:
        say("--no-tls-verify: dockerd decides TLS itself (its insecure-registries)")
    for ref in refs:
        dest = destination(ref, registry)
        if docker:
            digest = push_docker_image(
                source.image_id,
                dest,
                permanent=PERMANENT,
                attempts=attempts,
                backoff_s=backoff_s,
                say=say,
            )
        else:
            digest = push_with_retries(
                source.image_id,
                dest,
                tls_verify=tls_verify,
                attempts=attempts,
                backoff_s=backoff_s,
                say=say,
            )
        pushed.append(PublishedTag(dest, digest))
        say(f"pushed {dest} @ {digest}")
    sboms = publish_sbom(source, pushed, tls_verify=tls_verify, say=say)
    if source.manifest_dir is not None:
        _record(source.manifest_dir, pushed, sboms)
        if forced is None and len(pushed) > len(source.refs):
            pin = ImagePin(
                str(source.manifest["recipe_hash"]),  # type: ignore[index]
                str(source.manifest["image_id"]),  # type: ignore[index]
                pushed[-1].ref,
                pushed[-1].pinned,
            )
            write_pin(source.manifest_dir, pin)
            say(rerender_user_files(source.manifest_dir, pin))
    return pushed


@dataclass(frozen=True)
class PublishedSbom:
    """The SBOM pushed as an OCI artifact beside one pushed image digest."""

    ref: str
    digest: str
    subject: str


def publish_sbom(
    source: PublishSource,
    pushed: list[PublishedTag],
    *,
    tls_verify: bool,
    say: Callable[[str], None] = lambda _msg: None,
) -> list[PublishedSbom]:
    """Push the image's CycloneDX SBOM once per pushed repository and digest, referring to it.

    The SBOM is the sbom.cdx.json beside the manifest; without one (an older build, or an
    image reference) it is made now from the image's packages.
    """
    sbom = _sbom_bytes(source)
    published = []
    with tempfile.TemporaryDirectory(prefix="stackbuild-sbom-") as tmp:
        verify = str(tls_verify).lower()
        for repository, digest in dict.fromkeys((p.repository, p.digest) for p in pushed):
            image = f"docker://{repository}@{digest}"
            subject = _skopeo(["inspect", "--raw", f"--tls-verify={verify}", image]).stdout.encode()
            layout = Path(tmp) / digest.replace(":", "-")
            artifact = write_sbom_artifact(sbom, subject, layout)
            ref = f"{repository}:{sbom_tag(digest)}"
            _skopeo(
                [
                    "copy",
                    "--quiet",
                    f"--dest-tls-verify={verify}",
                    f"oci:{layout}",
                    f"docker://{ref}",
                ]
            )
            published.append(PublishedSbom(ref, artifact, digest))
            say(f"pushed SBOM {ref} @ {artifact} (refers to {digest})")
    return published


def _sbom_bytes(source: PublishSource) -> bytes:
    """The build's sbom.cdx.json, else one made from the image as it is now."""
    if source.manifest_dir is not None and (source.manifest_dir / SBOM_FILE).is_file():
        return (source.manifest_dir / SBOM_FILE).read_bytes()
    if source.manifest is not None and (source.manifest.get("sbom") or {}).get("debian"):
        return cyclonedx_json(source.manifest).encode()
    local = inspect_image(source.image_id)
    described = {
        "image_id": f"sha256:{local.id}",
        "digest": local.digest,
        "repository": source.refs[0].rsplit(":", 1)[0] if source.refs else "image",
        "tags": [ref.rsplit(":", 1)[-1] for ref in source.refs],
        "sbom": collect_packages(local.id).as_dict(),
    }
    return cyclonedx_json(described).encode()


def _skopeo(args: list[str]) -> ToolResult:
    """skopeo ARGS; a failure names the command and its last output lines."""
    result = run_tool(["skopeo", *args], check=False, timeout=600)
    if not result.ok:
        raise ToolError(
            f"skopeo {args[0]} failed: {last_error(result)}",
            hint="check that the registry is up and reachable, then publish again",
        )
    return result


def push_with_retries(
    image_id: str,
    dest: str,
    *,
    tls_verify: bool,
    attempts: int,
    backoff_s: float,
    say: Callable[[str], None],
) -> str:
    """podman push --digestfile; retry transient failures with exponential backoff."""
    with tempfile.TemporaryDirectory(prefix="stackbuild-push-") as tmp:
        digestfile = Path(tmp) / "digest"
        argv = [
            "podman",
            "push",
            f"--tls-verify={str(tls_verify).lower()}",
            "--digestfile",
            str(digestfile),
            image_id,
            f"docker://{dest}",
        ]
        result: ToolResult | None = None
        attempts = max(1, attempts)
        attempt = 0
        for attempt in range(1, attempts + 1):
            result = run_tool(argv, check=False, timeout=3600)
            if result.ok:
                return digestfile.read_text(encoding="utf-8").strip()
            if PERMANENT.search(result.tail(40)):
                break
            if attempt < attempts:
                delay = backoff_s * 2 ** (attempt - 1)
                say(f"push to {dest} failed (try {attempt}/{attempts}); retrying in {delay:g} s")
                time.sleep(delay)
        assert result is not None
        hint = "check that the registry is up and reachable, then publish again"
        if "HTTP response to HTTPS client" in result.tail(40):
            hint = "the registry speaks plain HTTP: pass --no-tls-verify"
        raise ToolError(
            f"could not push {dest} after {attempt} tries: {last_error(result)}", hint=hint
        )


def last_error(result: ToolResult) -> str:
    """The engine's final 'Error: ...' line, else the last output line."""
    lines = result.tail(40).splitlines()
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or ["(no output)"])[-1].removeprefix("Error: ")


def _record(folder: Path, pushed: list[PublishedTag], sboms: list[PublishedSbom]) -> None:
    """Write published.json next to the manifest: every ref and its digest, and the SBOMs."""
    data = {
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "tags": [{"ref": p.ref, "digest": p.digest, "pinned": p.pinned} for p in pushed],
        "sboms": [{"ref": s.ref, "digest": s.digest, "subject": s.subject} for s in sboms],
    }
    (folder / PUBLISHED_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
