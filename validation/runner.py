"""Plan the jobs of a validation, launch them, evaluate the checks, build a report.

Two ways in, one evaluation: `run_validation` launches the jobs from this host (`stackbuild
validate`); `evaluate_recorded` checks what a Slurm job script ran (`python -m validation
evaluate`, the script's last step). Both plan with `plan_jobs` and report with `build_report`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from validation.checks import (
    NOT_RUN,
    QUALITY_CHECKS,
    CheckResult,
    CudaCheck,
    HorovodCheck,
    LossDecreasingCheck,
    LossFiniteCheck,
    NcclCheck,
    OneDNNCheck,
    OneVsManyCheck,
    ParamsIdenticalCheck,
    ShardsDisjointCheck,
    WeakScalingCheck,
    summarise,
)
from validation.launch import CONTAINER_DATA, CONTAINER_OUT, LaunchPlan, build_command
from validation.launch_env import threads_per_rank
from validation.plan import (
    HOROVOD_MPI_LAUNCHERS,
    Job,
    ValidationRequest,
    launcher_passes,
    missing_cpu_flags,
    multi_rank_sync,
    plan_jobs,
    probe_file,
)
from validation.results import load_params, load_run, load_step
from validation.runtimes import RUNTIMES as CONTAINER_RUNTIMES
from validation.stack_checks import stack_checks

__all__ = [
    "HOROVOD_MPI_LAUNCHERS",
    "Job",
    "ValidationRequest",
    "launcher_passes",
    "multi_rank_sync",
    "plan_jobs",
    "probe_file",
]


def _paths(request: ValidationRequest) -> tuple[str, str | None, tuple[tuple[str, str], ...]]:
    out = request.out_dir.resolve()
    data = request.data_dir.resolve() if request.data_dir else None
    if request.runtime == "native":
        return str(out), str(data) if data else None, ()
    mounts = [(str(out), CONTAINER_OUT)] + ([(str(data), CONTAINER_DATA)] if data else [])
    return CONTAINER_OUT, CONTAINER_DATA if data else None, tuple(mounts)


def located_args(job: Job, out: str, threads: str, data: str | None = None) -> list[str]:
    """A job's full `python -m validation` arguments: results under `out`, `threads` per rank."""
    if job.kind == "probe":
        return [*job.module_args, "--out", probe_file(out, job.framework)]
    return [*job.module_args, "--out", out, "--threads", threads] + (
        ["--data", data] if data else []
    )


def launch_plan(request: ValidationRequest, ranks: int) -> LaunchPlan:
    """The LaunchPlan for a job with `ranks` ranks."""
    _, _, mounts = _paths(request)
    threads = str(threads_per_rank(max(request.ranks)))
    env = {"OMP_NUM_THREADS": threads, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return LaunchPlan(
        runtime=request.runtime,
        launcher=request.launcher if ranks > 1 else "none",
        ranks=ranks,
        image=request.image,
        python=request.python,
        mounts=mounts,
        env=env,
        gpu=request.gpu_devices,
        mpi_flavor=request.mpi_flavor,
        master_port=29500 + (os.getpid() % 400),
        container_label=request.container_label,
    )


Executor = Callable[[list[str], dict[str, str], float], tuple[int, list[str]]]


def stream_subprocess(
    argv: list[str], env: dict[str, str], timeout: float
) -> tuple[int, list[str]]:
    """Run argv in its own process group, echo its output lines live, return (exit code,
    last lines). At `timeout` seconds (silent or not) or on an interrupt the whole group is
    killed: launchers, ranks and container clients."""
    tail: list[str] = []
    timed_out = threading.Event()
    with subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    ) as proc:

        def kill_group() -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)

        def on_timeout() -> None:
            timed_out.set()
            kill_group()

        watchdog = threading.Timer(timeout, on_timeout)
        watchdog.daemon = True
        watchdog.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                tail = [*tail[-39:], line.rstrip()]
            returncode = proc.wait()
        except BaseException:
            kill_group()
            raise
        finally:
            watchdog.cancel()
        if timed_out.is_set():
            tail.append(f"killed after {timeout:.0f} s (the job's time limit)")
        return returncode, tail


def reap_containers(runtime: str, label: str) -> list[str]:
    """Remove the containers marked `label` that are still there (a killed `podman run` or
    `docker run` client leaves its container running); their ids."""
    if runtime not in CONTAINER_RUNTIMES:
        return []
    commands = CONTAINER_RUNTIMES[runtime].reap_argv(label)
    if commands is None:
        return []
    listing, remove = commands
    try:
        found = subprocess.run(listing, capture_output=True, text=True, timeout=60, check=False)
        ids = found.stdout.split()
        if ids:
            subprocess.run([*remove, *ids], capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return ids


def _job_env(request: ValidationRequest, plan: LaunchPlan) -> dict[str, str]:
    env = {**os.environ, **plan.env}
    if request.runtime == "native":
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p
        )
        if plan.launcher == "mpirun":
            env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(plan.master_port)})
    return env


def run_jobs(
    request: ValidationRequest, jobs: list[Job], executor: Executor = stream_subprocess
) -> None:
    """Launch every job that is not skipped, in order, recording argv and exit codes."""
    request.out_dir.mkdir(parents=True, exist_ok=True)
    out, data, _ = _paths(request)
    threads = str(threads_per_rank(max(request.ranks)))  # same per rank, for fair scaling
    with _sigterm_as_interrupt():
        for job in jobs:
            plan = launch_plan(request, job.ranks)
            job.argv = build_command(plan, located_args(job, out, threads, data))
            if job.skipped or job.not_run:
                continue
            print(f"==> {job.tag}: {' '.join(job.argv)}", flush=True)
            started = time.monotonic()
            try:
                job.returncode, job.log_tail = executor(
                    job.argv, _job_env(request, plan), request.timeout_s
                )
            finally:
                job.wall_s = time.monotonic() - started
                if job.returncode != 0:
                    left = reap_containers(request.runtime, request.container_label)
                    if left:
                        print(f"==> {job.tag}: removed {len(left)} containers", flush=True)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (scancel, a CI timeout) stops the jobs the way Ctrl-C does: killed, reaped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: Lines a launcher prints around any failed rank (MPICH's hydra banner, Open MPI's
#: epilogue): left out of a failed job's detail so the rank's own error shows.
#: Hydra's "YOUR APPLICATION TERMINATED WITH THE EXIT STRING: <signal>" line stays.
_LAUNCHER_NOISE = re.compile(
    r"^(\[\d+\](<std(out|err)>)?:?\s*)?("
    r"|=+|-+|=\s.*|This typically refers to a problem.*"
    r"|Please see the FAQ page.*|Primary job\s+terminated normally.*"
    r"|a non-zero exit code\..*|Per user-direction, the job has been aborted\.?"
    r"|mpirun detected that one or more processes exited.*"
    r")$"
)


def failure_excerpt(tail: list[str], lines: int = 8) -> list[str]:
    """The last `lines` lines of a failed job's output that are not a launcher's banner."""
    kept = [line for line in tail if not _LAUNCHER_NOISE.match(line.strip())]
    return (kept or tail)[-lines:]


def _job_failed(job: Job) -> CheckResult:
    detail = "\n".join(failure_excerpt(job.log_tail))
    if job.returncode is None and not detail:
        detail = "the job did not run (no record of it)"
    return CheckResult(
        "job-completed",
        "correctness",
        job.tag,
        "fail",
        job.returncode,
        0,
        "exit code ==",
        "launch",
        detail,
    )


def horovod_wanted(request: ValidationRequest, framework: str) -> dict[str, list[str]] | None:
    """What Horovod must have been built with for this request's runs; None: not used."""
    if request.horovod:
        return request.horovod
    name = "PyTorch" if framework == "pytorch" else "TensorFlow"
    if request.launcher == "horovodrun":
        return {"frameworks": [name]}
    if max(request.ranks) > 1 and multi_rank_sync(request, framework) == "horovod":
        return {"frameworks": [name], "controllers": ["MPI"]}
    return None


def evaluate(request: ValidationRequest, jobs: list[Job]) -> list[CheckResult]:
    """Run every check that the finished jobs allow."""
    out = request.out_dir
    results: list[CheckResult] = []
    runs: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        if job.skipped or job.not_run:
            results.append(
                CheckResult(
                    "job-completed",
                    "correctness",
                    job.tag,
                    "skip" if job.skipped else NOT_RUN,
                    None,
                    None,
                    "n/a",
                    "plan",
                    job.skipped or job.not_run,
                )
            )
            continue
        if job.kind == "probe":
            path = Path(probe_file(out, job.framework))
            if job.returncode != 0 or not path.exists():
                results.append(_job_failed(job))
                continue
            probe = json.loads(path.read_text())
            expect = probe.get("expect") or request.expect
            if expect:
                # An image of ours: every stack item is checked against its recipe.
                runs_here = not missing_cpu_flags(expect, request.host_cpu_flags)
                results += stack_checks(probe, expect, runs_here)
                continue
            if job.framework == "tensorflow":
                results.append(OneDNNCheck().evaluate(probe))
            results.append(CudaCheck().evaluate(probe, request.expect_gpu))
            results.append(NcclCheck().evaluate(probe, request.expect_gpu))
            wanted = horovod_wanted(request, job.framework)
            if wanted:
                results.append(HorovodCheck().evaluate(probe, wanted))
            continue
        run = load_run(out, job.tag)
        if job.returncode != 0 or len(run) != job.ranks:
            results.append(_job_failed(job))
            continue
        runs[job.tag] = run
        if job.kind == "train":
            results.append(LossFiniteCheck().evaluate(run))
            results.append(LossDecreasingCheck().evaluate(run))
            results += [c().evaluate(run) for c in QUALITY_CHECKS[job.suite or ""]]  # type: ignore[attr-defined]
            if job.ranks > 1:
                results.append(ParamsIdenticalCheck().evaluate(run))
                results.append(ShardsDisjointCheck().evaluate(run))
                single = runs.get(f"{job.suite}-{job.framework}-r1")
                if single:
                    results.append(
                        WeakScalingCheck(request.min_scaling_efficiency).evaluate(single, run)
                    )
    many = max(request.ranks)
    if f"consistency-r{many}" in runs and "consistency-r1" in runs:
        results.append(
            OneVsManyCheck().evaluate(
                f"cosmoflow/pytorch 1 vs {many} ranks",
                load_params(out, "consistency-r1", 0),
                load_params(out, f"consistency-r{many}", 0),
            )
        )
    return results


def run_validation(request: ValidationRequest, executor: Executor | None = None) -> dict[str, Any]:
    """Plan, launch, check; return the report dict (see validation.report)."""
    started = time.time()
    jobs = plan_jobs(request)
    run_jobs(request, jobs, executor or stream_subprocess)
    return build_report(request, jobs, started)


def evaluate_recorded(request: ValidationRequest) -> dict[str, Any]:
    """Check the runs that a job script already made (Slurm): its step records and rank files.

    The script ran the steps of `plan_jobs(request)` and recorded each one's exit status
    (validation.results.write_step); a planned step without a record counts as failed.
    """
    jobs = plan_jobs(request)
    starts = []
    for job in jobs:
        step = load_step(request.out_dir, job.tag)
        if step is None or job.skipped:
            continue
        job.returncode = int(step["returncode"])
        job.wall_s = float(step.get("wall_s", 0))
        job.argv = ["python", "-m", "validation", *job.module_args]
        if step.get("started"):
            starts.append(float(step["started"]))
    return build_report(request, jobs, min(starts, default=time.time()))


VERDICT_PASSED = "passed"
VERDICT_FAILED = "failed"
VERDICT_NO_GPU = "stack checked; not validated on a GPU"
VERDICT_NO_AVX512 = "built and stack-checked; not run: needs AVX-512"


def report_verdict(checks: list[CheckResult]) -> str:
    """The report's one-line verdict: passed only if every planned check ran and passed.

    A GPU image on a machine without a GPU, or an AVX-512 image on a CPU without it, is
    stack-checked but not validated: its verdict says so and is never "passed"."""
    if any(c.verdict == "fail" for c in checks):
        return VERDICT_FAILED
    not_run = [c for c in checks if c.verdict == NOT_RUN]
    if any(c.check == "gpu-visible" for c in not_run):
        return VERDICT_NO_GPU
    if any("needs AVX-512" in c.detail for c in not_run):
        return VERDICT_NO_AVX512
    if not_run:
        return f"not run: {not_run[0].subject}: {not_run[0].detail}"
    return VERDICT_PASSED


def build_report(request: ValidationRequest, jobs: list[Job], started: float) -> dict[str, Any]:
    """Evaluate the checks on finished jobs and assemble the report dict."""
    checks = evaluate(request, jobs)
    runs = {}
    for job in jobs:
        if job.kind != "probe" and not job.skipped:
            rank_results = load_run(request.out_dir, job.tag)
            if rank_results:
                runs[job.tag] = _run_summary(rank_results)
    probes = {}
    for fw in request.frameworks:
        path = Path(probe_file(request.out_dir, fw))
        if path.exists():
            probes[fw] = json.loads(path.read_text())
    summary = summarise(checks)
    verdict = report_verdict(checks)
    return {
        "schema": "stackbuild.validation-report/1",
        "target": request.image or "native",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 2),
        "request": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(request).items()},
        "jobs": [
            {
                "tag": j.tag,
                "kind": j.kind,
                "ranks": j.ranks,
                "argv": j.argv,
                "returncode": j.returncode,
                "wall_s": round(j.wall_s, 2),
                "skipped": j.skipped,
                "not_run": j.not_run,
                # a failed job's last 40 lines of output, to read without the console log
                "log_tail": j.log_tail if j.returncode else [],
            }
            for j in jobs
        ],
        "runs": runs,
        "probes": probes,
        "checks": [c.to_dict() for c in checks],
        "summary": summary,
        "verdict": verdict,
        "passed": verdict == VERDICT_PASSED,
    }


def _run_summary(run: list[dict[str, Any]]) -> dict[str, Any]:
    r0 = run[0]
    keys = (
        "suite",
        "framework",
        "size",
        "world_size",
        "sync",
        "fault",
        "threads",
        "device",
        "device_name",
        "local_batch",
        "global_batch",
        "steps",
        "epoch_loss",
        "step_loss",
        "metrics",
        "wall_s",
    )
    summary = {k: r0.get(k) for k in keys}
    summary["samples_per_s_per_rank"] = [r.get("samples_per_s") for r in run]
    return summary
