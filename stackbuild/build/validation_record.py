"""Reader for validation.json, the record the validation stage writes next to manifest.json.

Shape: {"image_digest": "sha256:...", "passed": true|false, ...}; extra keys are ignored.
image_digest may be the manifest's "digest" or its "image_id".
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from validation.plan import required_runs, run_name

VALIDATION_FILE = "validation.json"


@dataclass(frozen=True)
class ValidationRecord:
    """Whether validation passed, and for which image."""

    image_digest: str
    passed: bool
    path: Path
    verdicts: tuple[str, ...] = ()  # e.g. "stack checked; not validated on a GPU"

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
    verdicts = data.get("verdicts") or []
    return ValidationRecord(
        data["image_digest"],
        data.get("passed") is True,
        path,
        tuple(str(v) for v in verdicts if isinstance(v, str)),
    )


_TRAIN_TAG = re.compile(r"^(?P<suite>[a-z]+)-(?P<framework>[a-z]+)-r(?P<ranks>\d+)$")


def plan_gaps(record: ValidationRecord, image_ids: set[str], expect: dict[str, Any]) -> list[str]:
    """What keeps the record from covering the image's validation plan (empty: covered).

    The record's own pass/fail flags are not trusted: each recorded run's report is read,
    checked against the SHA-256 recorded with it, and must be about this image and have
    passed; its completed training jobs then count towards `required_runs(expect)`."""
    try:
        data = json.loads(record.path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"cannot read {record.path}: {exc}"]
    problems: list[str] = []
    covered: set[str] = set()
    for run in data.get("runs") or []:
        path = Path(str(run.get("report_json", "")))
        try:
            blob = path.read_bytes()
        except OSError:
            problems.append(f"the report of a recorded run is missing: {path}")
            continue
        if hashlib.sha256(blob).hexdigest() != run.get("report_sha256"):
            problems.append(f"{path} is not the report that was recorded (edited since?)")
            continue
        report = json.loads(blob)
        target = str(report.get("target", "")).removeprefix("sha256:")
        if target not in {i.removeprefix("sha256:") for i in image_ids if i}:
            problems.append(f"{path} is about image {target[:12]}, not this one")
            continue
        if report.get("verdict", "passed" if report.get("passed") else "failed") != "passed":
            continue
        launcher = str((report.get("request") or {}).get("launcher", ""))
        for job in report.get("jobs") or []:
            match = _TRAIN_TAG.match(str(job.get("tag", "")))
            if job.get("kind") != "train" or not match or job.get("skipped"):
                continue
            if job.get("not_run") or job.get("returncode") != 0:
                continue
            ranks = int(match["ranks"])
            covered.add(run_name(launcher, match["framework"], match["suite"], ranks))
    missing = []
    for name in required_runs(expect):
        rest = name.split("/", 1)[1]
        # One-rank runs are the same whichever engine's pass made them.
        if name not in covered and not (name.endswith(" x1") and f"any/{rest}" in covered):
            missing.append(name if name.endswith("xmany") else rest)
    if missing:
        problems.append("no passing run of: " + ", ".join(dict.fromkeys(missing)))
    return problems
