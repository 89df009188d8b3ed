"""Reader for validation.json, the record the validation stage writes next to manifest.json.

Shape: {"image_digest": "sha256:...", "passed": true|false, ...}; extra keys are ignored.
image_digest may be the manifest's "digest" or its "image_id".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

VALIDATION_FILE = "validation.json"


@dataclass(frozen=True)
class ValidationRecord:
    """Whether validation passed, and for which image."""

    image_digest: str
    passed: bool
    path: Path

    def covers(self, manifest: dict[str, object]) -> bool:
        """True if this record is about the image the manifest describes."""
        ids = {manifest.get("digest"), manifest.get("image_id")}
        return self.image_digest in ids - {None, ""}


def read_validation_record(path: Path) -> ValidationRecord | None:
    """The record at path (or <dir>/validation.json); None if absent or malformed."""
    if path.is_dir():
        path = path / VALIDATION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("image_digest"), str):
        return None
    return ValidationRecord(data["image_digest"], data.get("passed") is True, path)
