"""The publish gate covers the image's whole validation plan, from the reports themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.build.manifest import SCHEMA
from stackbuild.build.publish import PublishRefused, check_validation, resolve_source
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from validation.plan import required_runs, stack_expectations
from validation.record import build_record, write_record

IMAGE_ID = "c" * 64
MANIFEST = {
    "schema": SCHEMA,
    "image_id": f"sha256:{IMAGE_ID}",
    "digest": "sha256:ddd",
    "refs": ["localhost/stackbuild/pytorch:2.13-cpu"],
}
SUITES = ("cosmoflow", "climate", "gan")


def expect_of(recipe: str, variant: str) -> dict[str, Any]:
    v = select_variant(expand_matrix(load_recipe(PROJECT_ROOT / f"recipes/{recipe}.yaml")), variant)
    return stack_expectations(v.settings.model_dump(mode="json"), v.frameworks, v.target)


def report(launcher: str, frameworks: tuple[str, ...], verdict: str = "passed", drop: str = ""):
    jobs = [
        {"tag": f"{s}-{fw}-r{n}", "kind": "train", "ranks": n, "returncode": 0, "skipped": ""}
        for fw in frameworks
        for s in SUITES
        for n in (1, 2)
        if f"{s}-{fw}-r{n}" != drop
    ]
    return {
        "target": IMAGE_ID,
        "verdict": verdict,
        "passed": verdict == "passed",
        "request": {"launcher": launcher, "frameworks": list(frameworks), "suites": SUITES},
        "jobs": jobs,
        "checks": [],
        "summary": {"pass": 1, "fail": 0, "skip": 0, "not-run": 0},
    }


def folder_with(tmp_path: Path, reports: dict[str, dict[str, Any]]) -> Path:
    folder = tmp_path / "build"
    (folder / "files").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(MANIFEST))
    info = {"expect": expect_of("cpu", "pytorch-cpu")}
    (folder / "files/stackbuild-info.json").write_text(json.dumps(info))
    for launcher, body in reports.items():
        pass_dir = tmp_path / "reports" / launcher
        pass_dir.mkdir(parents=True)
        (pass_dir / "report.json").write_text(json.dumps(body))
        write_record(build_record(body, MANIFEST["digest"], pass_dir), folder / "validation.json")
    return folder


def test_the_plan_lists_every_suite_rank_count_and_engine() -> None:
    runs = required_runs(expect_of("cpu", "pytorch-cpu"))
    assert "ddp/pytorch/gan xmany" in runs and "horovod/pytorch/climate x1" in runs
    assert len(runs) == 12  # 2 engines x 3 suites x (1, many)
    assert required_runs(expect_of("cpu", "tensorflow-cpu"))[0].startswith("horovod/tensorflow")


def test_a_record_of_every_planned_run_opens_the_gate(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path,
        {
            "torchrun": report("torchrun", ("pytorch",)),
            "horovodrun": report("horovodrun", ("pytorch",)),
        },
    )
    assert "every planned run" in check_validation(resolve_source(str(folder)))


def test_a_missing_engine_is_refused_naming_its_runs(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, {"torchrun": report("torchrun", ("pytorch",))})
    with pytest.raises(PublishRefused) as err:
        check_validation(resolve_source(str(folder)))
    assert "horovod/pytorch/cosmoflow xmany" in str(err.value)
    assert "ddp/pytorch" not in str(err.value)


def test_one_gan_run_on_one_rank_does_not_open_the_gate(tmp_path: Path) -> None:
    one = report("torchrun", ("pytorch",))
    one["jobs"] = [j for j in one["jobs"] if j["tag"] == "gan-pytorch-r1"]
    folder = folder_with(tmp_path, {"torchrun": one})
    with pytest.raises(PublishRefused, match="cosmoflow x1"):
        check_validation(resolve_source(str(folder)))


def test_a_missing_rank_count_is_refused(tmp_path: Path) -> None:
    folder = folder_with(
        tmp_path,
        {
            "torchrun": report("torchrun", ("pytorch",)),
            "horovodrun": report("horovodrun", ("pytorch",), drop="gan-pytorch-r2"),
        },
    )
    with pytest.raises(PublishRefused, match=r"no passing run of: horovod/pytorch/gan xmany\n"):
        check_validation(resolve_source(str(folder)))


def test_an_edited_report_is_noticed(tmp_path: Path) -> None:
    failed = report("horovodrun", ("pytorch",), verdict="failed")
    folder = folder_with(
        tmp_path, {"torchrun": report("torchrun", ("pytorch",)), "horovodrun": failed}
    )
    path = tmp_path / "reports/horovodrun/report.json"
    path.write_text(json.dumps({**failed, "verdict": "passed", "passed": True}))
    record = json.loads((folder / "validation.json").read_text())
    record["passed"] = True
    (folder / "validation.json").write_text(json.dumps(record))
    with pytest.raises(PublishRefused, match="not the report that was recorded"):
        check_validation(resolve_source(str(folder)))


def test_a_record_edited_into_passing_is_noticed(tmp_path: Path) -> None:
    failed = report("horovodrun", ("pytorch",), verdict="failed")
    folder = folder_with(
        tmp_path, {"torchrun": report("torchrun", ("pytorch",)), "horovodrun": failed}
    )
    record = json.loads((folder / "validation.json").read_text())
    record["passed"] = True
    for run in record["runs"]:
        run["passed"] = True
    (folder / "validation.json").write_text(json.dumps(record))
    with pytest.raises(PublishRefused, match="horovod/pytorch/cosmoflow xmany"):
        check_validation(resolve_source(str(folder)))
