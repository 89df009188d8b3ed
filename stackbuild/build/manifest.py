"""The build manifest written next to the image: identity, provenance, size and packages."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackbuild.build.context import BuildSpec
from stackbuild.build.docker_engine import inspect_docker_image
from stackbuild.build.engines import BuildResult
from stackbuild.build.images import inspect_image
from stackbuild.build.sbom import SBOM_FILE, collect_packages
from stackbuild.errors import StackbuildError
from stackbuild.tools import run_tool

MANIFEST_FILE = "manifest.json"
SCHEMA = "stackbuild.manifest/v1"

#: The build argument the Containerfile turns into the org.opencontainers.image.revision label.
REVISION_ARG = "SOURCE_REVISION"
REVISION_LABEL = "org.opencontainers.image.revision"


def source_revision(scope: Path, *, count_ignored: bool = False) -> str:
    """The git commit of the repository holding scope (a file or folder), said honestly.

    '<sha>' when nothing under scope differs from that commit, '<sha>-dirty' when a file
    under it is modified, staged, deleted or untracked (or, with count_ignored, ignored),
    and 'none' outside a git work tree (or in one without a commit).
    """
    folder = scope if scope.is_dir() else scope.parent
    if shutil.which("git") is None or not folder.is_dir():
        return "none"
    head = run_tool(["git", "-C", str(folder), "rev-parse", "--verify", "-q", "HEAD"], check=False)
    if not head.ok or not head.stdout.strip():
        return "none"
    argv = ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=all"]
    if count_ignored:
        argv.append("--ignored=matching")
    status = run_tool([*argv, "--", str(scope.resolve())], check=False)
    sha = head.stdout.strip()
    return f"{sha}-dirty" if not status.ok or status.stdout.strip() else sha


def build_manifest(spec: BuildSpec, result: BuildResult) -> dict[str, Any]:
    """The manifest of a finished build, as a dict."""
    # Docker keeps its own image store: ask the engine that built the image.
    image = (inspect_docker_image if result.engine == "docker" else inspect_image)(result.image_id)
    return {
        "schema": SCHEMA,
        "image_id": f"sha256:{image.id}",
        "digest": image.digest,
        "repository": spec.repository,
        "tags": list(spec.tags),
        "refs": list(result.refs),
        "recipe": spec.recipe,
        "recipe_hash": spec.recipe_hash,
        "variant": spec.variant,
        "base_image": spec.base_image,
        "engine": result.engine,
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_duration_s": result.duration_s,
        "size_bytes": image.size,
        "build_log": str(result.log_path),
        "revision": image.labels.get(REVISION_LABEL),
        "sbom": collect_packages(result.image_id, engine=result.engine).as_dict(),
        "sbom_file": SBOM_FILE,
    }


def write_manifest(manifest: dict[str, Any], out_dir: Path) -> Path:
    """Write <out_dir>/manifest.json atomically; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MANIFEST_FILE
    partial = out_dir / f".{MANIFEST_FILE}.{os.getpid()}.partial"
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    """Read a manifest.json (or the one inside a directory)."""
    if path.is_dir():
        path = path / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackbuildError(
            f"{path} does not exist", hint="build the image first with `stackbuild build`"
        ) from None
    except json.JSONDecodeError as exc:
        raise StackbuildError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise StackbuildError(f"{path} is not a stackbuild manifest (schema {SCHEMA})")
    return data
