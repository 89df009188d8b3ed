"""The one training loop of both frameworks: schedule, data order, timing, evaluation, record.

Framework modules (`train_torch.py`, `train_tf.py`) supply an `Engine`: how the ranks start
(process group or Horovod), which device a rank trains on, how a batch becomes a framework
tensor, and the workloads' own steps. Everything a check later compares across frameworks
(the learning rate and its schedule, epochs and steps, which steps are timed, the order of
evaluation, the fields of the rank result) is decided here, once.
"""

from __future__ import annotations

import gc
import hashlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from validation.config import CosmoFlowConfig, GANConfig, WorkloadConfig, lr_factor
from validation.data.sources import load_arrays
from validation.device import DeviceChoice
from validation.metrics import throughput
from validation.progress import Progress
from validation.results import save_params, write_rank_result
from validation.spec import (
    VAL_OFFSET,
    RunSpec,
    effective_config,
    epoch_order,
    indices_digest,
    shard_indices,
)


def base_learning_rate(spec: RunSpec, config: WorkloadConfig, world: int) -> float:
    """The learning rate the schedule multiplies: the config's, 0 for the `frozen` fault, and
    CosmoFlow's SGD rate scaled linearly with the global batch under weak scaling (MLPerf HPC
    CosmoFlow: 1e-3 at global batch 64, scaled linearly; Adam's steps do not grow with the
    gradient's scale and keep their rate)."""
    if spec.fault == "frozen":
        return 0.0
    if isinstance(config, CosmoFlowConfig) and config.optimizer == "sgd" and spec.weak_scaling:
        return config.lr * world
    return config.lr


@dataclass(frozen=True)
class Schedule:
    """How many steps a rank takes, which of them are timed, and the rate of each."""

    config: WorkloadConfig
    base_lr: float
    steps_per_epoch: int
    epochs: int
    total: int
    untimed: int  # the first steps (graph building, allocator warm-up) are not timed
    scheduled: bool  # the rate follows the config's warm-up/decay (else: constant)

    def lr(self, step: int) -> float:
        """The learning rate of 0-based `step`."""
        if not self.scheduled:
            return self.base_lr
        assert isinstance(self.config, CosmoFlowConfig)
        return self.base_lr * lr_factor(self.config, step, self.steps_per_epoch)


def plan_schedule(spec: RunSpec, config: WorkloadConfig, shard_size: int, world: int) -> Schedule:
    """The schedule of a rank owning `shard_size` samples in a job of `world` ranks."""
    steps_per_epoch = shard_size // (config.global_batch // world)
    if steps_per_epoch < 1:
        raise ValueError(
            f"{shard_size} training samples per rank make no batch of "
            f"{config.global_batch // world}: raise --train-samples or lower --global-batch"
        )
    epochs = config.epochs if spec.steps is None else -(-spec.steps // steps_per_epoch)
    total = steps_per_epoch * epochs if spec.steps is None else spec.steps
    return Schedule(
        config=config,
        base_lr=base_learning_rate(spec, config, world),
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        total=total,
        untimed=steps_per_epoch if epochs > 1 else min(2, total - 1),
        # The schedule spans the configured epochs; runs cut to --steps (throughput, 1-vs-N
        # consistency, smoke runs) keep the base rate, so they compare like with like.
        scheduled=isinstance(config, CosmoFlowConfig) and spec.steps is None,
    )


class Workload(Protocol):
    """A workload's framework-specific steps (CosmoFlow, climate, GAN)."""

    def train_step(self, x: Any, y: Any) -> dict[str, float]:
        """One optimizer step on a batch; returns at least {"loss": ...}."""
        ...

    def set_lr(self, lr: float) -> None:
        """Train the next steps at `lr` (only called for scheduled workloads)."""
        ...

    def learning_rate(self) -> float:
        """The rate the framework's optimizer holds now (read back, for the record)."""
        ...

    def evaluate(self, x: np.ndarray, y: np.ndarray | None, ref: np.ndarray | None) -> dict:
        """Validation metrics on rank 0's held-out samples."""
        ...


class Engine(Protocol):
    """One framework on one rank: started ranks, device, tensors, workloads."""

    framework: str
    rank: int
    world: int
    sync: str
    threads: int
    device: DeviceChoice
    device_name: str  # what the device is (GPU model), for the record
    comm_threads_idle: list[str]
    comm_backend: str  # what moves the tensors: gloo, nccl, horovod-nccl+mpi, ...

    def layout(self, x: np.ndarray) -> np.ndarray:
        """Samples in the framework's layout (channels first or last)."""
        ...

    def seed_init(self, seed: int) -> None:
        """Seed the framework before the models are built (ranks differ until broadcast)."""
        ...

    def seed_steps(self, seed: int) -> None:
        """Seed the framework's per-step randomness (dropout, latent noise)."""
        ...

    def build(self, config: WorkloadConfig, lr: float) -> Any:
        """The workload for `config`, its optimizer at `lr`, replicas made equal."""
        ...

    def batch(self, x: np.ndarray, y: np.ndarray | None) -> tuple[Any, Any]:
        """A batch as the workload's train_step takes it (on the rank's device)."""
        ...

    def params(self, workload: Any) -> np.ndarray:
        """All trainable parameters, flattened to one float32 vector."""
        ...

    def placement(self, workload: Any) -> str:
        """Where the framework holds the parameters (its own device string)."""
        ...

    def versions(self) -> dict[str, str]:
        """Framework versions for the record."""
        ...

    def barrier(self) -> None:
        """Wait for every rank."""
        ...

    def close(self) -> None:
        """Tear the communication engine down (after the workload is released)."""
        ...


def _shuffle_targets(y: np.ndarray | None, seed: int, rank: int) -> np.ndarray | None:
    if y is None:
        return None
    return y[np.random.default_rng([seed, rank, 13]).permutation(len(y))]


@dataclass
class StepRecord:
    """What the loop measured."""

    steps: int
    history: dict[str, list[float]]
    epoch_loss: list[float]
    step_seconds: list[float]


#: A per-epoch callback of `run_training` (see `run_steps`).
EpochCallback = Callable[[dict[str, Any]], None]


def run_steps(
    spec: RunSpec,
    engine: Engine,
    workload: Workload,
    schedule: Schedule,
    data: tuple[np.ndarray, np.ndarray | None],
    progress: Progress,
    on_epoch: EpochCallback | None = None,
) -> StepRecord:
    """Train `schedule.total` steps over this rank's shard, epoch by epoch.

    on_epoch: called on every rank after each epoch with {"epoch", "epochs", "steps",
    "loss", "rank", "world_size"} (the notebooks print and plot with it).
    """
    x, y = data
    local_batch = schedule.config.global_batch // engine.world
    positions = np.arange(len(x))
    record = StepRecord(0, {}, [], [])
    for epoch in range(schedule.epochs):
        order = epoch_order(positions, spec.seed, epoch, engine.rank, spec.shuffle)
        losses = []
        for s in range(schedule.steps_per_epoch):
            if record.steps >= schedule.total:
                break
            pick = order[s * local_batch : (s + 1) * local_batch]
            xb, yb = engine.batch(x[pick], y[pick] if y is not None else None)
            if schedule.scheduled:
                workload.set_lr(schedule.lr(record.steps))
            t0 = time.perf_counter()
            values = workload.train_step(xb, yb)  # returns Python floats: the device is done
            if spec.fault == "straggler" and engine.rank > 0:
                time.sleep(max(0.05, 2 * (time.perf_counter() - t0)))
            dt = time.perf_counter() - t0
            record.steps += 1
            if record.steps > schedule.untimed:
                record.step_seconds.append(dt)
            for k, v in values.items():
                record.history.setdefault(k, []).append(v)
            losses.append(values["loss"])
            progress.step(epoch, schedule.epochs, record.steps, schedule.total, values["loss"])
        record.epoch_loss.append(float(np.mean(losses)) if losses else float("nan"))
        if on_epoch is not None and losses:
            on_epoch(
                {
                    "epoch": epoch + 1,
                    "epochs": schedule.epochs,
                    "steps": record.steps,
                    "loss": record.epoch_loss[-1],
                    "rank": engine.rank,
                    "world_size": engine.world,
                }
            )
    return record


def run_training(
    spec: RunSpec, start: Callable[[RunSpec], Engine], on_epoch: EpochCallback | None = None
) -> dict[str, Any]:
    """Start the ranks with `start`, train, evaluate on rank 0, write this rank's result."""
    started = time.time()
    engine = start(spec)
    rank, world = engine.rank, engine.world
    config = effective_config(spec, world)
    local_batch = config.global_batch // world
    progress = Progress(f"{spec.suite}/{engine.framework} {rank}/{world}", enabled=rank == 0)
    progress.say(
        f"{spec.size} config, sync={engine.sync} ({engine.comm_backend}), "
        f"device {engine.device.name} "
        f"({engine.device.reason}), {engine.threads} threads/rank, "
        f"global batch {config.global_batch}, fault={spec.fault}"
    )
    shard = shard_indices(config.train_samples, rank, world, spec.fault)
    x, y = load_arrays(config, spec.seed, shard, "train", spec.data_dir)
    x = engine.layout(x)
    if spec.fault == "shuffled-targets":
        y = _shuffle_targets(y, spec.seed, rank)
    schedule = plan_schedule(spec, config, len(shard), world)

    engine.seed_init(spec.seed + rank)
    workload = engine.build(config, schedule.base_lr)
    val_x = val_y = ref_x = None
    if rank == 0:
        idx = VAL_OFFSET + np.arange(config.val_samples)
        val_x, val_y = load_arrays(config, spec.seed, idx, "val", spec.data_dir)
        val_x = engine.layout(val_x)
        if isinstance(config, GANConfig):
            ref = load_arrays(config, spec.seed, idx + VAL_OFFSET, "ref", spec.data_dir)[0]
            ref_x = engine.layout(ref)
            workload.untrained = workload.summary(val_x)
    engine.seed_steps(spec.seed + 7919 * rank)

    record = run_steps(spec, engine, workload, schedule, (x, y), progress, on_epoch)

    metrics: dict[str, Any] = {}
    if rank == 0 and val_x is not None:
        metrics = workload.evaluate(val_x, val_y, ref_x)
        progress.say(
            "validation "
            + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        )
    params = engine.params(workload)
    if spec.save_params:
        save_params(spec.out_dir, spec.tag, rank, params)
    result = {
        "suite": spec.suite,
        "framework": engine.framework,
        "size": spec.size,
        "tag": spec.tag,
        "rank": rank,
        "world_size": world,
        "sync": engine.sync,
        "fault": spec.fault,
        "seed": spec.seed,
        "threads": engine.threads,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "comm_threads_idle": engine.comm_threads_idle,
        "comm_backend": engine.comm_backend,
        "device": engine.device.name,
        "device_reason": engine.device.reason,
        "device_name": engine.device_name,
        "placement": engine.placement(workload),
        "local_batch": local_batch,
        "global_batch": config.global_batch,
        "weak_scaling": spec.weak_scaling,
        "lr": schedule.base_lr,
        "lr_final": workload.learning_rate(),
        "steps": record.steps,
        "epochs": schedule.epochs,
        "step_loss": record.history,
        "epoch_loss": record.epoch_loss,
        **throughput(local_batch, record.step_seconds),
        "timed_steps": len(record.step_seconds),
        "metrics": metrics,
        "param_digest": hashlib.sha256(params.tobytes()).hexdigest(),
        "param_count": int(params.size),
        "shard": {
            "n": len(shard),
            "digest": indices_digest(shard),
            "indices": shard.tolist() if len(shard) <= 100_000 else None,
        },
        "versions": {**engine.versions(), "numpy": np.__version__},
        "host": socket.gethostname(),
        "wall_s": time.time() - started,
    }
    write_rank_result(spec.out_dir, spec.tag, rank, result)
    engine.barrier()
    # Release the workload (DDP wrappers and their reducers) before the process group they
    # use, not at interpreter exit: once, a rank that had finished and written its result
    # died at exit with "terminate called without an active exception" (SIGSEGV, 1 in 4).
    del workload
    gc.collect()
    engine.close()
    return result
