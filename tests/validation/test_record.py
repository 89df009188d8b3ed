"""The validation record keeps every run of one image; the image passes only if all did."""

from __future__ import annotations

import json
from pathlib import Path

from stackbuild.build.validation_record import read_validation_record
from validation.record import build_record, write_record


def report(passed: bool, launcher: str, failed: tuple[str, ...] = ()) -> dict[str, object]:
    return {
        "passed": passed,
        "created": "2026-11-28T10:00:00Z",
        "request": {
            "suites": ["cosmoflow"],
            "frameworks": ["pytorch"],
            "ranks": [1, 2],
            "runtime": "podman",
            "launcher": launcher,
            "size": "small",
        },
        "checks": [
            {"check": name, "subject": "cosmoflow/pytorch", "verdict": "fail"} for name in failed
        ],
    }


def write(tmp_path: Path, digest: str, passed: bool, launcher: str, *failed: str) -> dict:
    write_record(build_record(report(passed, launcher, failed), digest, tmp_path), tmp_path)
    return json.loads((tmp_path / "validation.json").read_text())


def test_a_failed_run_is_not_hidden_by_a_later_passing_run_of_another_launcher(tmp_path):
    write(tmp_path, "sha256:aa", False, "torchrun", "loss-decreases")
    record = write(tmp_path, "sha256:aa", True, "horovodrun")
    assert record["passed"] is False
    assert [r["launcher"] for r in record["runs"]] == ["torchrun", "horovodrun"]
    assert record["failed_checks"] == ["loss-decreases (cosmoflow/pytorch)"]
    assert read_validation_record(tmp_path).passed is False


def test_rerunning_the_same_configuration_replaces_its_earlier_result(tmp_path):
    write(tmp_path, "sha256:aa", True, "horovodrun")
    write(tmp_path, "sha256:aa", False, "torchrun", "scaling")
    record = write(tmp_path, "sha256:aa", True, "torchrun")
    assert record["passed"] is True and len(record["runs"]) == 2
    assert read_validation_record(tmp_path).passed is True


def test_a_record_of_another_image_is_replaced(tmp_path):
    write(tmp_path, "sha256:old", False, "torchrun", "scaling")
    record = write(tmp_path, "sha256:new", True, "torchrun")
    assert record["image_digest"] == "sha256:new" and len(record["runs"]) == 1
    assert record["passed"] is True
