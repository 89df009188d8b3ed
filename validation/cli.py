"""Argument parsing for `python -m validation` (argparse: images need no extra packages)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from validation.config import FRAMEWORKS, SIZES, SUITES
from validation.device import DEVICES
from validation.launch import LAUNCHERS, RUNTIMES
from validation.launch_env import COMM_PRIORITIES, horovod_on_mpi
from validation.plan import DEFAULT_MIN_SCALING_EFFICIENCY, ValidationRequest
from validation.report import failure_lines, summary_line, write_html, write_json
from validation.runner import evaluate_recorded
from validation.spec import FAULTS, RunSpec


def _overrides(args: argparse.Namespace) -> dict[str, float | int]:
    names = ("epochs", "global_batch", "train_samples", "val_samples", "lr", "dropout", "optimizer")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="train one workload on this rank (launch N copies for N ranks)")
    p.add_argument("--suite", choices=SUITES, required=True)
    p.add_argument("--framework", choices=FRAMEWORKS, default="pytorch")
    p.add_argument("--config", choices=SIZES, default="small")
    p.add_argument("--out", type=Path, default=Path("validation-out"))
    p.add_argument("--tag", default=None, help="run name (default: suite-framework-rN)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--fault", choices=sorted(FAULTS), default="none")
    p.add_argument("--sync", choices=("auto", "ddp", "manual", "horovod", "none"), default="auto")
    p.add_argument("--steps", type=int)
    p.add_argument("--no-shuffle", action="store_true")
    p.add_argument("--weak-scaling", action="store_true")
    p.add_argument("--save-params", action="store_true")
    p.add_argument("--data", type=Path)
    p.add_argument(
        "--threads",
        type=int,
        help="threads per rank; also pins the rank to its own THREADS cores where it could "
        "use more (as srun --cpu-bind=cores does), unless --no-bind",
    )
    p.add_argument("--no-bind", action="store_true", help="with --threads: do not pin cores")
    p.add_argument(
        "--comm-priority",
        choices=COMM_PRIORITIES,
        default="auto",
        help="scheduling of the gradient exchange's background threads: idle (they run when "
        "the rank's cores have nothing else to do), normal, or auto: idle where the compute "
        "threads fill the rank's cores",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where each rank trains: auto (its own GPU, cuda:LOCAL_RANK, on GPU targets and "
        "natively where one is visible, else the CPU), cuda (fail without a GPU) or cpu",
    )
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="CosmoFlow only")
    for name, kind in (
        ("epochs", int),
        ("global-batch", int),
        ("train-samples", int),
        ("val-samples", int),
        ("lr", float),
        ("dropout", float),
    ):
        p.add_argument(f"--{name}", type=kind)


def _run(args: argparse.Namespace) -> int:
    from validation.launch_env import bind_to_rank_cores, rank_info

    if args.threads and not args.no_bind:
        bind_to_rank_cores(args.threads)  # before the frameworks start their thread pools
    world = rank_info().world_size
    spec = RunSpec(
        suite=args.suite,
        framework=args.framework,
        size=args.config,
        out_dir=args.out,
        tag=args.tag or f"{args.suite}-{args.framework}-r{world}",
        seed=args.seed,
        fault=args.fault,
        sync=args.sync,
        steps=args.steps,
        shuffle=not args.no_shuffle,
        weak_scaling=args.weak_scaling,
        save_params=args.save_params,
        data_dir=args.data,
        threads=args.threads,
        comm_priority=args.comm_priority,
        device=args.device,
        overrides=_overrides(args),
    )
    if args.framework == "pytorch":
        from validation.train_torch import train
    else:
        from validation.train_tf import train
    train(spec)
    exit_without_mpi_finalize()
    return 0


def exit_without_mpi_finalize() -> None:
    """End a rank whose Horovod runs on MPI now, without MPI_Finalize, once every rank has
    written its result (a last barrier). MPICH 4.0's ch4:ucx finalize can deadlock: a rank
    that has closed its UCX endpoints waits in a PMI barrier while its peer still needs it
    to make progress to close its own (seen here: a 2-rank horovodrun job hung for good
    after writing its results; fixed in later MPICH, pmodels/mpich#6596). mpiexec (Hydra)
    and srun accept ranks that exit 0 without finalizing."""
    for name in ("horovod.torch", "horovod.tensorflow"):
        hvd = sys.modules.get(name)
        if hvd is not None and horovod_on_mpi(hvd):
            # Every rank first: a rank gone early gets the others killed before they write
            # their results (seen: rank 0 lost, and the launcher still exited 0).
            hvd.barrier()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _probe(args: argparse.Namespace) -> int:
    from validation.stack import probe_stack

    info = probe_stack(args.framework)
    text = json.dumps(info, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


def _csv(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"{value!r}: expected a comma-separated list of {', '.join(choices)}"
            )
        return items

    return parse


def _ranks(value: str) -> tuple[int, ...]:
    try:
        ranks = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError:
        ranks = ()
    if not ranks or ranks[0] < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected rank counts, e.g. 1,4")
    return ranks


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="check the runs a job script made under --out; write report.json/.html there",
        description="Evaluate the steps of the plan that the job script ran (the same checks as "
        "`stackbuild validate`). Exit status 0: every check passed; 1: a check failed.",
    )
    p.add_argument("--out", type=Path, required=True, help="the directory the runs wrote")
    p.add_argument("--suite", type=_csv(SUITES), required=True, help="comma-separated")
    p.add_argument("--framework", type=_csv(FRAMEWORKS), required=True, help="comma-separated")
    p.add_argument("--ranks", type=_ranks, required=True, help="rank counts run, e.g. 1,4")
    p.add_argument("--launcher", choices=LAUNCHERS, default="srun")
    p.add_argument("--runtime", choices=RUNTIMES, default="native")
    p.add_argument("--image", help="the image validated (names the report)")
    p.add_argument("--config", choices=SIZES, default="small")
    p.add_argument("--expect-gpu", action="store_true", help="GPU target: require CUDA and NCCL")
    p.add_argument("--min-scaling-efficiency", type=float, default=DEFAULT_MIN_SCALING_EFFICIENCY)


def _evaluate(args: argparse.Namespace) -> int:
    if not args.out.is_dir():
        raise ValueError(f"{args.out} is not a directory: pass the --out the runs wrote to")
    request = ValidationRequest(
        out_dir=args.out,
        image=args.image,
        suites=args.suite,
        frameworks=args.framework,
        ranks=args.ranks,
        runtime=args.runtime,
        launcher=args.launcher,
        size=args.config,
        expect_gpu=args.expect_gpu,
        min_scaling_efficiency=args.min_scaling_efficiency,
    )
    report = evaluate_recorded(request)
    write_json(report, args.out / "report.json")
    write_html(report, args.out / "report.html")
    print(f"{summary_line(report)}; report {args.out / 'report.html'}")
    for line in failure_lines(report):
        print(line, file=sys.stderr)
    return 0 if report["passed"] else 1


def build_parser() -> argparse.ArgumentParser:
    """The parser for `python -m validation`."""
    parser = argparse.ArgumentParser(prog="python -m validation", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    p = sub.add_parser("probe", help="report the framework stack (oneDNN, CUDA, NCCL, Horovod)")
    p.add_argument("--framework", choices=FRAMEWORKS, required=True)
    p.add_argument("--out", type=Path)
    _add_evaluate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m validation`."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handlers = {"run": _run, "probe": _probe, "evaluate": _evaluate}
    try:
        return handlers[args.command](args)
    except ValueError as exc:
        print(f"validation: error: {exc}", file=sys.stderr)
        return 2
