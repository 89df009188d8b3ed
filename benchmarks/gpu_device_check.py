"""Run the validation harness natively on one GPU and write its samples/s beside the CPU's.

Called by benchmarks/gpu_device_check.sh (which makes the Python environment); runs with
the Python under test, which needs only numpy and the frameworks, like the images:

    python benchmarks/gpu_device_check.py constraints --framework pytorch
    python benchmarks/gpu_device_check.py run --mode gpu --out FILE [--tf-python PY]

`run --mode gpu` trains on cuda (each run fails if it cannot); `--mode cpu` runs the same
jobs on the CPU (the script's dry run, and this machine's CPU numbers for the comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "recipes" / "gpu.yaml"
RESULTS = ROOT / "benchmarks" / "results"
CPU_BASELINE = RESULTS / "gpu_device_check_cpu.json"
#: Full-size CosmoFlow on one V100, the cosmoflow-benchmark notebook (2019 model), as
#: /work/shared/REFERENCE.md quotes it: 39.7 samples/s per GPU at local batch 4.
V100_COSMOFLOW_SAMPLES_PER_S = 39.7
V100_SOURCE = "cosmoflow-benchmark notebook (2019 model): V100 39.7 samples/s per GPU"
#: Full-size CosmoFlow steps: local batch 4 as in the reference; a few distinct samples
#: (synthetic 128^3 x 4 volumes take seconds each to make) repeated over the steps.
FULL_GPU = {"global_batch": 4, "train_samples": 8, "val_samples": 4, "steps": 30}
FULL_CPU = {"global_batch": 1, "train_samples": 2, "val_samples": 1, "steps": 4}


def _recipe(recipe: Path) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise SystemExit(
            "gpu_device_check: reading recipes/gpu.yaml needs PyYAML in this Python "
            "(pip install pyyaml), or pass --constraints FILE to the script"
        ) from exc
    return yaml.safe_load(recipe.read_text(encoding="utf-8"))


def horovod_patches(recipe: Path = RECIPE) -> list[str]:
    """'STRIP PATH' per Horovod patch of recipes/gpu.yaml, in the order it applies them."""
    patches = _recipe(recipe)["defaults"]["horovod"]["patches"]
    return [f"{p.get('strip', 1)} {(recipe.parent / p['path']).resolve()}" for p in patches]


def constraints(framework: str, recipe: Path = RECIPE) -> list[str]:
    """The pinned package set (pip.constraints) of `framework` in recipes/gpu.yaml."""
    doc = _recipe(recipe)
    try:
        return list(doc["frameworks"][framework]["pip"]["constraints"])
    except (KeyError, TypeError) as exc:
        raise SystemExit(f"gpu_device_check: {recipe} has no {framework} pip.constraints") from exc


@dataclass
class Job:
    """One training run of the check."""

    name: str  # e.g. "pytorch/cosmoflow small x1 ddp"
    framework: str
    suite: str
    size: str
    engine: str  # none | ddp | horovod
    args: list[str] = field(default_factory=list)


def plan(mode: str, frameworks: list[str], horovod: dict[str, bool]) -> list[Job]:
    """The runs: every suite at 1 rank per framework, DDP and Horovod at world size 1 on
    CosmoFlow, and full-size CosmoFlow for the published per-GPU figure."""
    jobs = []
    for fw in frameworks:
        for suite in ("cosmoflow", "climate", "gan"):
            jobs.append(Job(f"{fw}/{suite} small x1", fw, suite, "small", "none"))
        if fw == "pytorch":
            jobs.append(Job("pytorch/cosmoflow small x1 ddp", fw, "cosmoflow", "small", "ddp"))
        if horovod.get(fw):
            jobs.append(
                Job(f"{fw}/cosmoflow small x1 horovod", fw, "cosmoflow", "small", "horovod")
            )
        full = FULL_GPU if mode == "gpu" else FULL_CPU
        args = [arg for k, v in full.items() for arg in (f"--{k.replace('_', '-')}", str(v))]
        jobs.append(Job(f"{fw}/cosmoflow full x1", fw, "cosmoflow", "full", "none", args))
    return jobs


def _command(job: Job, python: str, out: Path, device: str, port: int) -> list[str]:
    run = [python, "-m", "validation", "run", "--suite", job.suite, "--framework", job.framework]
    run += ["--config", job.size, "--out", str(out), "--tag", _tag(job), "--device", device]
    run += job.args
    if job.engine == "ddp":  # a 1-rank process group: NCCL on the GPU, gloo on the CPU
        torchrun = [python, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=1"]
        torchrun += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--no-python"]
        return [*torchrun, *run, "--sync", "ddp"]
    if job.engine == "horovod":
        horovodrun = str(Path(python).parent / "horovodrun")
        if not Path(horovodrun).exists():
            horovodrun = shutil.which("horovodrun") or "horovodrun"
        return [horovodrun, "-np", "1", "-H", "localhost:1", *run, "--sync", "horovod"]
    return run


def _tag(job: Job) -> str:
    return job.name.replace("/", "-").replace(" ", "-")


def framework_facts(framework: str) -> dict[str, Any]:
    """Versions and GPU facts of this Python's `framework` (and its Horovod, if any)."""
    out: dict[str, Any] = {"python": platform.python_version()}
    if framework == "pytorch":
        import torch

        gpu = torch.cuda.is_available()
        out.update(
            torch=torch.__version__,
            cuda_build=torch.version.cuda,
            cuda_available=gpu,
            gpu_count=torch.cuda.device_count(),
            nccl=".".join(map(str, torch.cuda.nccl.version())) if torch.version.cuda else None,
            cudnn=torch.backends.cudnn.version(),
            gpu=torch.cuda.get_device_name(0) if gpu else None,
        )
    else:
        import tensorflow as tf

        build = tf.sysconfig.get_build_info()
        out.update(
            tensorflow=tf.__version__,
            cuda_build=build.get("cuda_version"),
            gpu_count=len(tf.config.list_physical_devices("GPU")),
        )
    try:
        import horovod

        hvd: Any = __import__(f"horovod.{'torch' if framework == 'pytorch' else 'tensorflow'}")
        module = getattr(hvd, "torch" if framework == "pytorch" else "tensorflow")
        out.update(horovod=horovod.__version__, horovod_nccl_built=bool(module.nccl_built()))
    except Exception as exc:  # not installed, or built without this framework
        out.update(horovod=None, horovod_error=f"{type(exc).__name__}: {exc}"[:300])
    return out


def _probe(python: str, framework: str, env: dict[str, str]) -> dict[str, Any]:
    argv = [python, str(Path(__file__).resolve()), "probe", "--framework", framework]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-3:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _checks(run: list[dict[str, Any]], suite: str, size: str) -> dict[str, str]:
    """The harness's own training checks on a finished run (small configs learn; full-size
    runs are speed runs on synthetic data, so only finiteness applies)."""
    from validation.checks import QUALITY_CHECKS, LossDecreasingCheck, LossFiniteCheck

    checks = [LossFiniteCheck()]
    if size == "small":
        checks += [LossDecreasingCheck(), *(c() for c in QUALITY_CHECKS[suite])]
    verdicts = {}
    for check in checks:
        result = check.evaluate(run)
        verdicts[result.check] = result.verdict
    return verdicts


def _cpu_reference(baseline: Path) -> dict[str, float]:
    """samples/s per run name from this machine's CPU run of the same jobs."""
    try:
        data = json.loads(baseline.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return {
        r["name"]: r["samples_per_s"]
        for r in data.get("runs", [])
        if r.get("status") == "ok" and r.get("samples_per_s")
    }


def _cpu_full_cosmoflow() -> dict[str, Any] | None:
    """Full-size CosmoFlow on this machine's CPU (benchmarks/validation_flops.py)."""
    try:
        flops = json.loads((RESULTS / "validation_flops.json").read_text(encoding="utf-8"))
        full = flops["cosmoflow_full_128"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None
    return {
        "samples_per_s": full["batch"] / full["step_s"],
        "source": "benchmarks/results/validation_flops.json (PyTorch, 2 cores, batch 1)",
        "date": flops.get("date"),
    }


def _nvidia_smi() -> dict[str, Any]:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"nvidia_smi": None}
    query = "--query-gpu=name,driver_version,memory.total"
    proc = subprocess.run(
        [smi, query, "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    return {"nvidia_smi": proc.stdout.strip().splitlines() or proc.stderr.strip()[-300:]}


def _pinned(probes: dict[str, Any]) -> dict[str, Any]:
    """Whether each framework that ran is the version recipes/gpu.yaml pins."""
    out = {}
    for fw, module in (("pytorch", "torch"), ("tensorflow", "tensorflow")):
        found = (probes.get(fw) or {}).get(module)
        if not found:
            continue
        try:
            pins = [c for c in constraints(fw) if c.startswith(f"{module}==")]
        except SystemExit:  # no PyYAML in this Python: say so rather than guess
            out[fw] = {"found": found, "pinned": None}
            continue
        want = pins[0].split("==", 1)[1] if pins else None
        out[fw] = {"found": found, "pin": want, "pinned": found.split("+")[0] == want}
    return out


def _write_report(
    args: argparse.Namespace,
    probes: dict[str, Any],
    pythons: dict[str, str],
    frameworks: list[str],
    runs: list[dict[str, Any]],
    not_run: list[dict[str, str]],
    planned: int,
) -> dict[str, Any]:
    """Write the result file as it stands (after every run: a run cut short keeps the rest)."""
    full = {}
    for fw in frameworks:
        r = next((r for r in runs if r["name"] == f"{fw}/cosmoflow full x1"), None)
        if r and r["status"] == "ok":
            full[fw] = {
                "samples_per_s": r["samples_per_s"],
                "local_batch": r["local_batch"],
                "device": r["device"],
                "v100_samples_per_s": V100_COSMOFLOW_SAMPLES_PER_S,
                "ratio_vs_v100": round(r["samples_per_s"] / V100_COSMOFLOW_SAMPLES_PER_S, 4),
            }
    report = {
        "benchmark": "gpu_device_check",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": args.mode,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_1min": os.getloadavg()[0],
            **_nvidia_smi(),
        },
        "framework_set": {
            "source": args.source,
            "pinned_set": _pinned(probes),
            **{fw: probes[fw] for fw in pythons},
        },
        "runs": runs,
        "cosmoflow_full": {
            **full,
            "reference": V100_SOURCE,
            "cpu": _cpu_full_cosmoflow(),
            "note": "synthetic data, FP32 (PyTorch's default TF32 convolutions on GPUs "
            "that have them); the reference used TensorFlow on a V100",
        },
        "cpu_baseline": str(args.cpu_baseline.relative_to(ROOT))
        if args.cpu_baseline.is_relative_to(ROOT)
        else str(args.cpu_baseline),
        "not_run": not_run,
        "passed": bool(runs) and all(r["status"] == "ok" for r in runs),
    }
    report["planned_runs"] = planned
    report["passed"] = len(runs) == planned and report["passed"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def run_check(args: argparse.Namespace) -> int:
    """Run every job, evaluate, compare, write the JSON; exit 1 if a GPU run failed."""
    device = "cuda" if args.mode == "gpu" else "cpu"
    # On a GPU every run takes well under a minute: a hung one must not eat a lease.
    args.timeout = args.timeout or (150 if args.mode == "gpu" else 900)
    pythons = {"pytorch": args.python}
    if args.tf_python:
        pythons["tensorflow"] = args.tf_python
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    probes = {fw: _probe(py, fw, env) for fw, py in pythons.items()}
    frameworks = [fw for fw in pythons if "error" not in probes[fw]]
    not_run = [
        {"what": f"{fw} runs", "why": f"{fw} does not import: {probes[fw]['error']}"}
        for fw in pythons
        if fw not in frameworks
    ]
    horovod = {fw: bool(probes[fw].get("horovod")) for fw in frameworks}
    for fw in frameworks:
        if not horovod[fw]:
            why = probes[fw].get("horovod_error", "not installed")
            not_run.append({"what": f"{fw} Horovod x1", "why": f"no Horovod: {why}"})
    not_run += [{"what": note.split(":")[0], "why": note} for note in args.note]
    if "tensorflow" not in pythons:
        not_run.append({"what": "tensorflow runs", "why": "no TensorFlow Python given"})
    cpu = _cpu_reference(args.cpu_baseline)
    runs = []
    with tempfile.TemporaryDirectory(prefix="gpu-device-check-") as tmp:
        out = Path(args.work_dir or tmp)
        jobs = [
            job
            for job in plan(args.mode, frameworks, horovod)
            if not args.only or any(part in job.name for part in args.only)
        ]
        planned = len(jobs)
        for n, job in enumerate(jobs):
            argv = _command(job, pythons[job.framework], out, device, 29400 + n)
            print(f"==> {job.name}: {' '.join(argv)}", flush=True)
            started = time.monotonic()
            try:
                proc = subprocess.run(
                    argv, env=env, capture_output=True, text=True, timeout=args.timeout, check=False
                )
                code, log = proc.returncode, (proc.stdout + proc.stderr).strip().splitlines()
            except subprocess.TimeoutExpired:
                code, log = None, [f"killed after {args.timeout} s"]
            record: dict[str, Any] = {
                "name": job.name,
                "engine": job.engine,
                "wall_s": round(time.monotonic() - started, 1),
            }
            from validation.results import load_run

            result = load_run(out, _tag(job))
            if code != 0 or not result:
                record.update(status="failed", returncode=code, log_tail=log[-12:])
                print("\n".join(log[-12:]), flush=True)
            else:
                r0 = result[0]
                record.update(
                    status="ok",
                    device=r0.get("device"),
                    device_name=r0.get("device_name"),
                    placement=r0.get("placement"),
                    comm_backend=r0.get("comm_backend"),
                    sync=r0.get("sync"),
                    local_batch=r0.get("local_batch"),
                    steps=r0.get("steps"),
                    timed_steps=r0.get("timed_steps"),
                    samples_per_s=r0.get("samples_per_s"),
                    checks=_checks(result, job.suite, job.size),
                )
                if job.name in cpu and record["samples_per_s"]:
                    record["cpu_samples_per_s"] = cpu[job.name]
                    record["speedup_vs_cpu"] = round(record["samples_per_s"] / cpu[job.name], 2)
                print(
                    f"    {record['device']} ({record['device_name']}, {record['comm_backend']}): "
                    f"{record['samples_per_s']:.1f} samples/s, checks {record['checks']}",
                    flush=True,
                )
            runs.append(record)
            _write_report(args, probes, pythons, frameworks, runs, not_run, planned)
    report = _write_report(args, probes, pythons, frameworks, runs, not_run, planned)
    print(f"wrote {args.out}: {sum(r['status'] == 'ok' for r in runs)}/{len(runs)} runs ok")
    for item in not_run:
        print(f"  not run: {item['what']}: {item['why']}")
    if args.mode == "gpu" and any(r["status"] == "ok" and r["device"] == "cpu" for r in runs):
        print("gpu_device_check: a run trained on the CPU in GPU mode", file=sys.stderr)
        return 1
    return 0 if report["passed"] else 1


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("constraints", help="print a framework's pinned GPU package set")
    c.add_argument("--framework", choices=("pytorch", "tensorflow"), required=True)
    sub.add_parser("patches", help="print recipes/gpu.yaml's Horovod patches (strip, path)")
    f = sub.add_parser("probe", help="print this Python's framework facts as JSON")
    f.add_argument("--framework", choices=("pytorch", "tensorflow"), required=True)
    r = sub.add_parser("run", help="run the jobs and write the JSON")
    r.add_argument("--mode", choices=("gpu", "cpu"), required=True)
    r.add_argument("--python", default=sys.executable, help="the PyTorch Python")
    r.add_argument("--tf-python", help="a TensorFlow Python (optional)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--cpu-baseline", type=Path, default=CPU_BASELINE)
    r.add_argument("--source", default="this Python", help="where the frameworks came from")
    r.add_argument("--timeout", type=int, help="seconds per run (default 150 on GPUs, 900)")
    r.add_argument("--work-dir", help="keep the runs' files here (default: a temporary dir)")
    r.add_argument("--note", action="append", default=[], help="something not run, and why")
    r.add_argument("--only", action="append", help="run only jobs whose name contains this")
    args = parser.parse_args(argv)
    if args.command == "constraints":
        print("\n".join(constraints(args.framework)))
        return 0
    if args.command == "patches":
        print("\n".join(horovod_patches()))
        return 0
    if args.command == "probe":
        print(json.dumps(framework_facts(args.framework)))
        return 0
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
