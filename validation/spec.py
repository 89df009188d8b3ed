"""What one training run is asked to do, and the data order every rank agrees on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from validation.config import WorkloadConfig, workload_config

#: Faults a run can inject on purpose, so each check has a negative control.
FAULTS = {
    "none": "no fault",
    "shuffled-targets": "training targets/labels are permuted across samples (no signal)",
    "frozen": "learning rate 0: weights never change",
    "no-broadcast": "ranks start from their own random weights (initial broadcast skipped)",
    "no-allreduce": "gradients are not exchanged between ranks",
    "grad-sum": "gradients are summed over ranks instead of averaged",
    "same-shard": "every rank reads rank 0's shard",
    "straggler": "ranks other than 0 sleep twice their step time every step",
}

VAL_OFFSET = 10_000_000  # validation samples use indices far from training ones


@dataclass(frozen=True)
class RunSpec:
    """One training run of one suite in one framework, as seen by every rank."""

    suite: str
    framework: str
    size: str = "small"
    out_dir: Path = Path("validation-out")
    tag: str = "run"
    seed: int = 1234
    fault: str = "none"
    sync: str = "auto"  # auto | ddp | manual | horovod | none
    steps: int | None = None  # stop after this many steps (overrides epochs)
    shuffle: bool = True
    weak_scaling: bool = False  # global batch and data grow with the number of ranks
    save_params: bool = False
    data_dir: Path | None = None
    threads: int | None = None
    comm_priority: str = "auto"  # launch_env.COMM_PRIORITIES
    device: str = "auto"  # device.DEVICES: auto | cuda | cpu
    overrides: dict[str, float | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {', '.join(FAULTS)}")


def shard_indices(n_samples: int, rank: int, world: int, fault: str = "none") -> np.ndarray:
    """The training sample indices this rank owns: every world-th, so shards are disjoint."""
    owner = 0 if fault == "same-shard" else rank
    return np.arange(owner, n_samples, world)


def epoch_order(shard: np.ndarray, seed: int, epoch: int, rank: int, shuffle: bool) -> np.ndarray:
    """This rank's sample order in one epoch."""
    if not shuffle:
        return shard
    rng = np.random.default_rng([seed, epoch, rank, 7])
    return shard[rng.permutation(len(shard))]


def indices_digest(indices: np.ndarray) -> str:
    """A short digest of a set of indices (order-free)."""
    data = np.sort(np.asarray(indices, dtype=np.int64)).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def effective_config(spec: RunSpec, world: int) -> WorkloadConfig:
    """The workload config for this run: size, overrides, and weak-scaling growth."""
    config = workload_config(spec.suite, spec.size, **spec.overrides)
    if spec.weak_scaling and world > 1:
        config = replace(
            config,
            global_batch=config.global_batch * world,
            train_samples=config.train_samples * world,
        )
    if config.global_batch % world:
        raise ValueError(f"global batch {config.global_batch} is not divisible by {world} ranks")
    return config
