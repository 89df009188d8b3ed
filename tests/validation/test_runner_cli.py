"""The runner, `stackbuild validate` and `python -m validation evaluate` end to end, with a
fake launcher that writes results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stackbuild.commands.validate import validate_command
from validation import runner
from validation.cli import build_parser
from validation.cli import main as validation_main
from validation.plan import evaluate_arguments
from validation.results import step_path, write_step
from validation.runner import (
    ValidationRequest,
    evaluate_recorded,
    launcher_passes,
    plan_jobs,
    run_validation,
)


def fake_results(quality_ok: bool) -> Any:
    """An executor that writes what a healthy (or unhealthy) run would have written."""

    def execute(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, list[str]]:
        args = argv[argv.index("validation") + 1 :]
        out = Path(args[args.index("--out") + 1])
        volumes = [a.removeprefix("--volume=") for a in argv if a.startswith("--volume=")]
        mounts = dict(v.split(":")[::-1] for v in volumes)
        out = Path(mounts.get(str(out), str(out)))  # in an image: where the mount lands
        if args[0] == "probe" and str(out.parent) in mounts:
            out = Path(mounts[str(out.parent)]) / out.name
        if args[0] == "probe":
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(
                json.dumps(
                    {
                        "framework": "pytorch",
                        "pytorch": {"gpu_count": 0},
                        "horovod": {
                            "available": True,
                            "check_build": {
                                "frameworks": {"PyTorch": True, "TensorFlow": True},
                                "controllers": {"MPI": True, "Gloo": True},
                            },
                        },
                    }
                )
            )
            return 0, []
        tag = args[args.index("--tag") + 1]
        world = 2 if "--nproc-per-node=2" in argv or "-np" in argv else 1
        (out / tag).mkdir(parents=True, exist_ok=True)
        for r in range(world):
            mae = 0.2 if quality_ok else 0.5
            (out / tag / f"rank-{r}.json").write_text(
                json.dumps(
                    {
                        "suite": "cosmoflow",
                        "framework": "pytorch",
                        "rank": r,
                        "world_size": world,
                        "step_loss": {"loss": [1.0] * 5 + [0.5] * 5},
                        "param_digest": "d",
                        "metrics": {"val_mae": mae, "baseline_mae": 0.5} if r == 0 else {},
                        "shard": {"indices": list(range(r, 16, world))},
                        "samples_per_s": 10.0,
                        "epoch_loss": [0.7],
                    }
                )
            )
            if "--save-params" in args:
                import numpy as np

                np.save(out / tag / f"params-rank-{r}.npy", np.ones(10, dtype=np.float32))
        return 0, []

    return execute


#: A native validation that needs no Horovod in this Python.
NATIVE_DDP = [
    "--native",
    "--suite",
    "cosmoflow",
    "--framework",
    "pytorch",
    "--launcher",
    "torchrun",
]


def request(tmp_path: Path) -> ValidationRequest:
    return ValidationRequest(
        out_dir=tmp_path / "rep", suites=("cosmoflow",), frameworks=("pytorch",), ranks=(1, 2)
    )


def test_plan_has_probe_train_and_consistency_jobs(tmp_path: Path) -> None:
    tags = [j.tag for j in plan_jobs(request(tmp_path))]
    assert tags == [
        "probe-pytorch",
        "cosmoflow-pytorch-r1",
        "cosmoflow-pytorch-r2",
        "consistency-r1",
        "consistency-r2",
    ]


def test_tensorflow_multi_rank_without_horovod_is_skipped_with_reason(tmp_path: Path) -> None:
    req = ValidationRequest(out_dir=tmp_path, suites=("gan",), frameworks=("tensorflow",))
    job = next(j for j in plan_jobs(req) if j.ranks == 2)
    assert "Horovod" in job.skipped


def test_healthy_results_pass_and_bad_quality_fails(tmp_path: Path) -> None:
    good = run_validation(request(tmp_path), executor=fake_results(True))
    names = {c["check"] for c in good["checks"]}
    assert {"cosmoflow-mae", "params-identical", "weak-scaling", "one-vs-n-ranks"} <= names
    assert good["passed"], [c for c in good["checks"] if c["verdict"] == "fail"]
    bad = run_validation(request(tmp_path / "b"), executor=fake_results(False))
    assert not bad["passed"]


def test_a_crashed_job_is_a_failed_check(tmp_path: Path) -> None:
    report = run_validation(request(tmp_path), executor=lambda a, e, t: (1, ["Traceback"]))
    failed = [c for c in report["checks"] if c["verdict"] == "fail"]
    assert failed and all(c["check"] == "job-completed" for c in failed)


def test_cli_writes_report_html_and_record_beside_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "stream_subprocess", fake_results(True))
    build = tmp_path / "build"
    build.mkdir()
    (build / "manifest.json").write_text(json.dumps({"digest": "sha256:abc"}))
    result = CliRunner().invoke(
        validate_command,
        [*NATIVE_DDP, "-o", str(tmp_path / "rep"), "--manifest", str(build / "manifest.json")],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((build / "validation.json").read_text())
    assert record["image_digest"] == "sha256:abc" and record["passed"] is True
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<svg" in html and "cosmoflow-mae" in html and "http" not in html.split("<svg")[0]


def test_cli_exits_nonzero_when_a_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "stream_subprocess", fake_results(False))
    result = CliRunner().invoke(
        validate_command,
        [*NATIVE_DDP, "-o", str(tmp_path)],
    )
    assert result.exit_code == 1
    assert "FAIL cosmoflow-mae" in result.output


def test_the_stackbuild_command_exits_nonzero_when_a_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the real entry point (not click's test runner): the process status is 1."""
    from stackbuild.cli import main

    args = ["validate", *NATIVE_DDP]
    monkeypatch.setattr(runner, "stream_subprocess", fake_results(False))
    assert main([*args, "-o", str(tmp_path / "bad")]) == 1
    monkeypatch.setattr(runner, "stream_subprocess", fake_results(True))
    assert main([*args, "-o", str(tmp_path / "good")]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "either an IMAGE or --native"),
        (["--native", "--suite", "bert"], "unknown value"),
        (["--native", "--ranks", "two"], "not a list of integers"),
    ],
)
def test_cli_user_errors_are_messages(args: list[str], message: str) -> None:
    from stackbuild.errors import StackbuildError

    result = CliRunner().invoke(validate_command, args)
    assert isinstance(result.exception, StackbuildError) and message in str(result.exception)


def test_srun_runs_tensorflow_multi_rank_with_horovod_and_pytorch_with_ddp(tmp_path: Path) -> None:
    req = ValidationRequest(out_dir=tmp_path, suites=("gan",), launcher="srun", ranks=(1, 4))
    jobs = {j.tag: j for j in plan_jobs(req)}
    assert not any(j.skipped for j in jobs.values())
    assert jobs["gan-tensorflow-r4"].module_args[-2:] == ["--sync", "horovod"]
    assert jobs["gan-pytorch-r4"].module_args[-2:] == ["--sync", "ddp"]
    assert "--sync" not in jobs["gan-pytorch-r1"].module_args
    assert runner.horovod_wanted(req, "tensorflow") == {
        "frameworks": ["TensorFlow"],
        "controllers": ["MPI"],
    }
    assert runner.horovod_wanted(req, "pytorch") is None


def record_steps(report: dict[str, Any], out: Path) -> None:
    """Write the step records a job script would have written for the jobs in report."""
    for job in report["jobs"]:
        if not job["skipped"]:
            write_step(out, job["tag"], job["returncode"], 1.7e9, job["wall_s"])


def test_recorded_steps_are_evaluated_like_launched_ones(tmp_path: Path) -> None:
    req = request(tmp_path)
    launched = run_validation(req, executor=fake_results(True))
    record_steps(launched, req.out_dir)
    recorded = evaluate_recorded(req)
    verdicts = [(c["check"], c["subject"], c["verdict"]) for c in recorded["checks"]]
    assert verdicts == [(c["check"], c["subject"], c["verdict"]) for c in launched["checks"]]
    assert recorded["passed"] and recorded["created"] == "2023-11-14T22:13:20Z"


def test_a_planned_step_without_a_record_or_with_a_bad_exit_fails(tmp_path: Path) -> None:
    req = request(tmp_path)
    record_steps(run_validation(req, executor=fake_results(True)), req.out_dir)
    step_path(req.out_dir, "consistency-r2").unlink()
    write_step(req.out_dir, "cosmoflow-pytorch-r2", 137, 1.7e9, 3.0)
    report = evaluate_recorded(req)
    failed = {c["subject"]: c for c in report["checks"] if c["verdict"] == "fail"}
    assert set(failed) == {"consistency-r2", "cosmoflow-pytorch-r2"}
    assert "did not run" in failed["consistency-r2"]["detail"]
    assert failed["cosmoflow-pytorch-r2"]["measured"] == 137 and not report["passed"]


def test_evaluate_arguments_parse_back_into_the_same_plan(tmp_path: Path) -> None:
    req = ValidationRequest(
        out_dir=tmp_path,
        image="reg/img:1",
        suites=("cosmoflow", "gan"),
        frameworks=("tensorflow",),
        ranks=(1, 8),
        runtime="shifter",
        launcher="srun",
        expect_gpu=True,
        min_scaling_efficiency=0.75,
    )
    args = build_parser().parse_args([*evaluate_arguments(req), "--out", str(tmp_path)])
    assert (args.suite, args.framework, args.ranks) == (req.suites, req.frameworks, req.ranks)
    assert (args.image, args.runtime, args.launcher) == ("reg/img:1", "shifter", "srun")
    assert args.expect_gpu and args.min_scaling_efficiency == 0.75


@pytest.mark.parametrize("healthy", [True, False])
def test_python_m_validation_evaluate_writes_the_report_and_exits_with_the_verdict(
    tmp_path: Path, healthy: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    req = request(tmp_path)
    record_steps(run_validation(req, executor=fake_results(healthy)), req.out_dir)
    for name in ("report.json", "report.html"):
        (req.out_dir / name).unlink(missing_ok=True)
    code = validation_main([*evaluate_arguments(req), "--out", str(req.out_dir)])
    out, err = capsys.readouterr()
    report = json.loads((req.out_dir / "report.json").read_text())
    assert (req.out_dir / "report.html").is_file()
    assert code == (0 if healthy else 1) and report["passed"] is healthy
    assert ("validation PASSED" if healthy else "validation FAILED") in out
    assert healthy or "FAIL cosmoflow-mae" in err


def test_python_m_validation_evaluate_refuses_a_missing_directory(tmp_path: Path) -> None:
    args = ["evaluate", "--suite", "gan", "--framework", "pytorch", "--ranks", "1,2"]
    assert validation_main([*args, "--out", str(tmp_path / "nowhere")]) == 2


def test_auto_launcher_runs_one_pass_per_engine_the_stacks_ship() -> None:
    both = ("pytorch", "tensorflow")
    assert launcher_passes("auto", both, (1, 2)) == [
        ("torchrun", ("pytorch",)),
        ("horovodrun", both),
    ]
    assert launcher_passes("auto", ("tensorflow",), (1, 2)) == [("horovodrun", ("tensorflow",))]
    assert launcher_passes("auto", both, (1,)) == [("torchrun", both)]  # no launcher used
    assert launcher_passes("srun", both, (1, 2)) == [("srun", both)]
    assert launcher_passes("auto", both, (1, 2), horovod=False) == [("torchrun", both)]


def test_auto_validates_ddp_and_horovod_with_a_report_each_and_one_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy = fake_results(True)

    def horovod_crashes(argv: list[str], env: dict[str, str], t: float) -> tuple[int, list[str]]:
        if "horovodrun" in argv and "probe" not in argv:
            return 1, ["horovodrun: rank 1 exited with code 1"]
        return healthy(argv, env, t)

    build = tmp_path / "build"
    build.mkdir()
    (build / "manifest.json").write_text(json.dumps({"digest": "sha256:abc", "image_id": "ab"}))
    args = ["reg/img:1", "--suite", "cosmoflow", "--manifest", str(build / "manifest.json")]
    monkeypatch.setattr(runner, "stream_subprocess", healthy)
    result = CliRunner().invoke(validate_command, [*args, "-o", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    ddp = json.loads((tmp_path / "rep/torchrun/report.json").read_text())
    hvd = json.loads((tmp_path / "rep/horovodrun/report.json").read_text())
    assert ddp["request"]["frameworks"] == ["pytorch"]
    assert hvd["request"]["frameworks"] == ["pytorch", "tensorflow"]
    syncs = {
        j["tag"]: j["argv"][-j["argv"][::-1].index("--sync")]
        for j in hvd["jobs"]
        if "--sync" in j["argv"]
    }
    assert syncs == {"cosmoflow-pytorch-r2": "horovod", "cosmoflow-tensorflow-r2": "horovod"}
    record = json.loads((build / "validation.json").read_text())
    assert [r["launcher"] for r in record["runs"]] == ["torchrun", "horovodrun"]
    assert record["passed"]

    monkeypatch.setattr(runner, "stream_subprocess", horovod_crashes)
    result = CliRunner().invoke(validate_command, [*args, "-o", str(tmp_path / "rep2")])
    assert result.exit_code == 1
    assert "torchrun (pytorch): validation PASSED" in result.output
    assert "horovodrun (pytorch, tensorflow): validation FAILED" in result.output
    assert not json.loads((build / "validation.json").read_text())["passed"]
    # the report keeps what a crashed job printed last; a job that ran well keeps nothing
    hvd = json.loads((tmp_path / "rep2/horovodrun/report.json").read_text())
    tails = {j["tag"]: j["log_tail"] for j in hvd["jobs"] if not j["skipped"]}
    assert tails["cosmoflow-pytorch-r2"] == ["horovodrun: rank 1 exited with code 1"]
    assert tails["probe-pytorch"] == []


def test_native_auto_without_horovod_validates_ddp_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stackbuild.commands import validate
    from stackbuild.errors import StackbuildError

    monkeypatch.setattr(validate, "_python_has_horovod", lambda: False)
    monkeypatch.setattr(runner, "stream_subprocess", fake_results(True))
    result = CliRunner().invoke(
        validate_command, ["--native", "--suite", "cosmoflow", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "no Horovod" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["torchrun", "validation.json"]
    report = json.loads((tmp_path / "torchrun/report.json").read_text())
    skipped = [j for j in report["jobs"] if j["skipped"]]
    assert [j["tag"] for j in skipped] == ["cosmoflow-tensorflow-r2"]

    result = CliRunner().invoke(validate_command, ["--native", "--launcher", "horovodrun"])
    assert isinstance(result.exception, StackbuildError)
    assert "--launcher torchrun" in str(result.exception)


def test_a_build_folder_is_validated_for_its_images_frameworks_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stackbuild validate out/gpu/tensorflow-gpu` runs TensorFlow jobs only: the default
    frameworks are the image's (its recipe's); naming one it lacks is refused."""
    from stackbuild import PROJECT_ROOT
    from stackbuild.recipe import expand_matrix, load_recipe, select_variant
    from stackbuild.render.renderer import render_variant

    variants = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))
    build = render_variant(select_variant(variants, "tensorflow-cpu"), tmp_path / "out")
    (build / "manifest.json").write_text(json.dumps({"digest": "sha256:ab", "image_id": "ab"}))
    monkeypatch.setattr(runner, "stream_subprocess", fake_results(True))
    args = [str(build), "--suite", "cosmoflow", "-o", str(tmp_path / "rep")]
    result = CliRunner().invoke(validate_command, args)
    # (The fake probe describes no real image, so its stack checks fail: only what ran counts.)
    assert "horovodrun (tensorflow): validation FAILED" in result.output, result.output
    assert result.exit_code == 1
    # a failed validation leaves the user files as they were, and says so
    assert "user files not pinned: the validation failed" in result.output
    assert not (build / "pin.json").exists()
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["horovodrun"]
    report = json.loads((tmp_path / "rep/horovodrun/report.json").read_text())
    assert report["request"]["frameworks"] == ["tensorflow"]
    assert not [j for j in report["jobs"] if "pytorch" in j["tag"]]
    from stackbuild.cli import main

    assert main(["validate", *args, "--framework", "pytorch"]) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert f"{build} has no pytorch (its recipe's frameworks: tensorflow)" in error


def test_a_failed_validation_says_what_the_user_files_still_run(tmp_path: Path) -> None:
    """No pin: nothing changes. A pin to this image from an earlier pass stays (publish now
    refuses it). A pin to an earlier image stays, and the message names that image."""
    from stackbuild.commands.validate import not_pinned_after_failure
    from stackbuild.render.pin import ImagePin, write_pin

    manifest = {"schema": "stackbuild.manifest/v1", "image_id": "sha256:" + "a" * 64}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert "not pinned: the validation failed" in not_pinned_after_failure(tmp_path)
    write_pin(tmp_path, ImagePin("h", "sha256:" + "a" * 64, "reg/img:1-aaaaaaaaaaaa"))
    same = not_pinned_after_failure(tmp_path)
    assert "stay pinned to reg/img:1-aaaaaaaaaaaa" in same and "publish refuses it" in same
    write_pin(tmp_path, ImagePin("h", "sha256:" + "b" * 64, "reg/img:1-bbbbbbbbbbbb"))
    older = not_pinned_after_failure(tmp_path)
    assert "not pinned to this image" in older and "validated reg/img:1-bbbbbbbbbbbb" in older
