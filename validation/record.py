"""The validation record: one small JSON keyed by image digest, kept next to manifest.json.

Shape (read by stackbuild.build.validation_record): {"image_digest", "passed", "runs": [...]}.
An image is validated by several runs (DDP under torchrun, Horovod under horovodrun, ...):
each run is kept, a rerun of the same configuration replaces its earlier entry, and the
image has passed only while every kept run passed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

RECORD_FILE = "validation.json"
SCHEMA = "stackbuild.validation-record/1"


def build_record(report: dict[str, Any], image_digest: str, report_dir: Path) -> dict[str, Any]:
    """The record of one validation run of one image (or 'native:<host>')."""
    request = report.get("request", {})
    return {
        "schema": SCHEMA,
        "image_digest": image_digest,
        "target": report.get("target"),
        "passed": bool(report.get("passed")),
        "verdict": report.get("verdict") or ("passed" if report.get("passed") else "failed"),
        "summary": report.get("summary", {}),
        "validated_at": report.get("created"),
        "suites": request.get("suites"),
        "frameworks": request.get("frameworks"),
        "ranks": request.get("ranks"),
        "runtime": request.get("runtime"),
        "launcher": request.get("launcher"),
        "config": request.get("size"),
        "failed_checks": [
            f"{c['check']} ({c['subject']})"
            for c in report.get("checks", [])
            if c["verdict"] == "fail"
        ],
        "report_json": str(report_dir / "report.json"),
        # What publish checks the report against: editing it afterwards is noticed.
        "report_sha256": _sha256(report_dir / "report.json"),
        "report_html": str(report_dir / "report.html"),
    }


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


#: What makes two runs "the same validation": a rerun of one replaces the other.
RUN_KEY = ("runtime", "launcher", "frameworks", "suites", "ranks", "config")


def merge_record(run: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    """The image's record after adding run: earlier runs of the same image are kept."""
    runs: list[dict[str, Any]] = []
    if existing and existing.get("image_digest") == run["image_digest"]:
        key = [run.get(k) for k in RUN_KEY]
        runs = [r for r in existing.get("runs", []) if [r.get(k) for k in RUN_KEY] != key]
    runs.append(run)
    return {
        "schema": SCHEMA,
        "image_digest": run["image_digest"],
        "passed": all(r["passed"] for r in runs),
        "verdicts": sorted({r.get("verdict", "passed" if r["passed"] else "failed") for r in runs}),
        "validated_at": run.get("validated_at"),
        "failed_checks": [c for r in runs for c in r.get("failed_checks", [])],
        "runs": runs,
    }


def write_record(run: dict[str, Any], path: Path) -> Path:
    """Merge run into the record at path (a directory means <dir>/validation.json), atomically.

    A record about another image digest is replaced: it described an image that is gone.
    """
    if path.is_dir():
        path = path / RECORD_FILE
    existing: dict[str, Any] | None = None
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
        existing = loaded if isinstance(loaded, dict) else None
    except (OSError, json.JSONDecodeError):
        existing = None
    record = merge_record(run, existing)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path
