"""The podman adapter for local image storage (shared with buildah): query, tag, remove."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stackbuild.errors import StackbuildError
from stackbuild.tools import run_tool


@dataclass(frozen=True)
class LocalImage:
    """What local storage knows about one image."""

    id: str
    digest: str
    names: tuple[str, ...]
    size: int
    created: str
    labels: dict[str, str]


def image_exists(ref: str) -> bool:
    """True if `ref` (name:tag or ID) is in local storage."""
    return run_tool(["podman", "image", "exists", ref], check=False).ok


def inspect_image(ref: str) -> LocalImage:
    """Inspect one local image or raise an error naming it."""
    result = run_tool(["podman", "image", "inspect", ref], check=False)
    if not result.ok:
        raise StackbuildError(
            f"image {ref!r} is not in local storage",
            hint="list images with `podman images`; build it with `stackbuild build`",
        )
    data: dict[str, Any] = json.loads(result.stdout)[0]
    return LocalImage(
        id=str(data["Id"]),
        digest=str(data.get("Digest") or ""),
        names=tuple(data.get("RepoTags") or ()),
        size=int(data.get("Size") or 0),
        created=str(data.get("Created") or ""),
        labels=dict((data.get("Config") or {}).get("Labels") or {}),
    )


def tag_image(image_id: str, refs: list[str]) -> None:
    """Give an image its tags (one podman call)."""
    run_tool(["podman", "tag", image_id, *refs])


def remove_image(ref: str) -> None:
    """Remove a tag or image; missing is fine."""
    run_tool(["podman", "rmi", "--force", ref], check=False)


def relabel_image(image_id: str, labels: dict[str, str]) -> str:
    """A new image with the same layers and these labels added; returns its id."""
    container = run_tool(["buildah", "from", "--pull-never", image_id]).stdout.strip()
    try:
        flags = [arg for name, value in labels.items() for arg in ("--label", f"{name}={value}")]
        run_tool(["buildah", "config", *flags, container])
        return run_tool(["buildah", "commit", "--quiet", container]).stdout.strip()
    finally:
        run_tool(["buildah", "rm", container], check=False)
