"""The image that user files name once it is validated: a reference a rebuild cannot move.

`stackbuild validate` (on a pass) tags the validated image with an immutable tag,
`<tag>-<image id[:12]>`, and `stackbuild publish` pushes that tag and learns the registry
digest; each writes pin.json into the build folder and re-renders the user files there
(module files, wrappers, job scripts), which then name:

- the registry digest (`repo@sha256:...`) for the runtimes that can run one (podman,
  docker, podman-hpc): a rebuild never changes what a digest names;
- the immutable tag for Shifter (`shifterimg` pulls by tag) and Apptainer (the SIF file is
  named after it);
- the validated image ID, which the wrappers of podman, docker and podman-hpc compare
  with what the tag names at start, refusing to run anything else.

Before validation there is nothing to pin: user files name the recipe's tag, and a
rebuild says so when it moves it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from stackbuild.errors import StackbuildError
from validation.runtimes import get_runtime

PIN_FILE = "pin.json"


@dataclass(frozen=True)
class ImagePin:
    """What a validated build's user files run."""

    recipe_hash: str  # the build digest of the variant that was validated
    image_id: str  # sha256:<hex>, the validated image
    reference: str  # repo:<tag>-<id12>: a tag stackbuild never moves
    digest_reference: str = ""  # registry/repo@sha256:<digest>, once published

    def for_runtime(self, runtime: str) -> str:
        """The reference `runtime` should name: the digest where it can run one."""
        if self.digest_reference and get_runtime(runtime).pins_digest:
            return self.digest_reference
        return self.reference

    def checked_id(self, runtime: str) -> str:
        """The image ID the wrapper checks at start ('' where the reference is a digest)."""
        return "" if "@sha256:" in self.for_runtime(runtime) else self.image_id


def immutable_tag(tag: str, image_id: str) -> str:
    """2.13-cpu + sha256:0123456789abcdef... -> 2.13-cpu-0123456789ab."""
    return f"{tag}-{image_id.removeprefix('sha256:')[:12]}"


def read_pin(folder: Path) -> ImagePin | None:
    """The folder's pin.json, or None; a damaged file is an error that says so."""
    path = folder / PIN_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ImagePin(**data)
    except (OSError, ValueError, TypeError) as exc:
        raise StackbuildError(
            f"cannot read {path}: {exc}",
            hint="validate the build again (`stackbuild validate`), which rewrites it",
        ) from exc


def write_pin(folder: Path, pin: ImagePin) -> Path:
    """Write pin.json atomically."""
    path = folder / PIN_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(pin), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
