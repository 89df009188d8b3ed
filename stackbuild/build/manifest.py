"""The build manifest written next to the image: identity, provenance, size and SBOM."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackbuild.build.context import BuildSpec
from stackbuild.build.engines import BuildResult
from stackbuild.build.images import inspect_image
from stackbuild.errors import StackbuildError
from stackbuild.tools import run_tool

MANIFEST_FILE = "manifest.json"
SCHEMA = "stackbuild.manifest/v1"

DPKG_QUERY = r"dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n'"
#: The first Python with pip: PATH (images put their venv first), then common venv places.
PIP_LIST = (
    "for py in python3 python /opt/*/bin/python3 /usr/local/bin/python3; do "
    "if command -v $py >/dev/null 2>&1 && $py -m pip --version >/dev/null 2>&1; then "
    "exec $py -m pip list --format json; fi; done; echo null"
)


def collect_sbom(image: str) -> dict[str, Any]:
    """Debian packages (dpkg-query) and Python packages (pip list) installed in image."""
    deb = _run_in_image(image, DPKG_QUERY)
    debian = []
    if deb is not None:
        for line in deb.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                debian.append({"name": parts[0], "version": parts[1], "arch": parts[2]})
    pip_out = _run_in_image(image, PIP_LIST)
    python: list[dict[str, str]] | None = None
    if pip_out is not None:
        try:
            python = json.loads(pip_out.strip().splitlines()[-1]) if pip_out.strip() else None
        except json.JSONDecodeError:
            python = None
    return {"debian": debian if deb is not None else None, "python": python}


def _run_in_image(image: str, script: str) -> str | None:
    """Run a shell snippet in a throwaway container without network; None if it failed."""
    result = run_tool(
        ["podman", "run", "--rm", "--network=none", "--entrypoint", "/bin/sh", image, "-c", script],
        check=False,
        timeout=300,
    )
    return result.stdout if result.ok else None


def build_manifest(spec: BuildSpec, result: BuildResult) -> dict[str, Any]:
    """The manifest of a finished build, as a dict."""
    image = inspect_image(result.image_id)
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
        "sbom": collect_sbom(result.image_id),
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
