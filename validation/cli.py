"""Argument parsing for `python -m validation` (argparse: images need no extra packages)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from validation.config import FRAMEWORKS, SIZES, SUITES
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
    p.add_argument("--threads", type=int)
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
    from validation.launch_env import rank_info

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
        overrides=_overrides(args),
    )
    if args.framework == "pytorch":
        from validation.train_torch import train
    else:
        from validation.train_tf import train
    train(spec)
    return 0


def _probe(args: argparse.Namespace) -> int:
    from validation.stack import probe_stack

    info = probe_stack(args.framework)
    text = json.dumps(info, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser for `python -m validation`."""
    parser = argparse.ArgumentParser(prog="python -m validation", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    p = sub.add_parser("probe", help="report the framework stack (oneDNN, CUDA, NCCL, Horovod)")
    p.add_argument("--framework", choices=FRAMEWORKS, required=True)
    p.add_argument("--out", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m validation`."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    handlers = {"run": _run, "probe": _probe}
    try:
        return handlers[args.command](args)
    except ValueError as exc:
        print(f"validation: error: {exc}", file=sys.stderr)
        return 2
