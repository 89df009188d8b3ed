"""Reading validation.json, the record publish checks."""

from __future__ import annotations

import json
from pathlib import Path

from stackbuild.build.validation_record import read_validation_record

MANIFEST = {"digest": "sha256:aaa", "image_id": "sha256:bbb"}


def test_record_is_read_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "validation.json").write_text(
        json.dumps({"image_digest": "sha256:aaa", "passed": True, "checks": []})
    )
    record = read_validation_record(tmp_path)
    assert record is not None and record.passed and record.covers(MANIFEST)


def test_record_may_name_the_image_id(tmp_path: Path) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"image_digest": "sha256:bbb", "passed": False}))
    record = read_validation_record(path)
    assert record is not None and not record.passed and record.covers(MANIFEST)


def test_absent_or_malformed_record_reads_as_none(tmp_path: Path) -> None:
    assert read_validation_record(tmp_path) is None
    (tmp_path / "validation.json").write_text("{not json")
    assert read_validation_record(tmp_path) is None
    (tmp_path / "validation.json").write_text(json.dumps({"passed": True}))
    assert read_validation_record(tmp_path) is None


def test_passed_must_be_literally_true(tmp_path: Path) -> None:
    (tmp_path / "validation.json").write_text(
        json.dumps({"image_digest": "sha256:aaa", "passed": "yes"})
    )
    record = read_validation_record(tmp_path)
    assert record is not None and not record.passed
