"""Training loops for the three workloads in PyTorch; each rank writes what it measured."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import socket
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from validation.config import ClimateConfig, CosmoFlowConfig, GANConfig, WorkloadConfig, lr_factor
from validation.data.sources import load_arrays
from validation.launch_env import idle_comm_wanted, rank_info, threads_per_rank
from validation.metrics import (
    background_baseline_iou,
    class_iou,
    confusion_matrix,
    constant_baseline_mae,
    histogram_chi2,
    mean_absolute_error,
    mean_iou,
    spectrum_chi2,
    throughput,
)
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
from validation.torch_dist import TorchSync, unwrap

EVAL_BATCH = 16


def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [
            model(torch.from_numpy(x[i : i + EVAL_BATCH])).numpy()
            for i in range(0, len(x), EVAL_BATCH)
        ]
    model.train()
    return np.concatenate(out)


class CosmoFlowWorkload:
    """Regress 4 parameters with MSE and SGD momentum (MLPerf HPC CosmoFlow)."""

    def __init__(self, config: CosmoFlowConfig, sync: TorchSync, lr: float) -> None:
        from validation.models.torch_cosmoflow import CosmoFlowNet

        self.sync = sync
        self.model = sync.wrap(CosmoFlowNet(config))
        if config.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        else:
            opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=config.momentum)
        self.opt = sync.optimizer(opt, unwrap(self.model))

    def modules(self) -> list[nn.Module]:
        return [unwrap(self.model)]

    def set_lr(self, lr: float) -> None:
        """Train the next steps at `lr` (the config's schedule)."""
        for group in self.opt.param_groups:
            group["lr"] = lr

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.opt.zero_grad()
        loss = F.mse_loss(self.model(x), y)
        loss.backward()
        self.sync.sync_grads(unwrap(self.model))
        self.opt.step()
        return {"loss": loss.item()}

    def evaluate(self, x: np.ndarray, y: np.ndarray, ref: np.ndarray | None) -> dict[str, Any]:
        pred = _predict(unwrap(self.model), x)
        mae = mean_absolute_error(pred, y)
        return {
            "val_mae": mae,
            "baseline_mae": constant_baseline_mae(y),
            "val_mae_per_target": np.mean(np.abs(pred - y), axis=0).tolist(),
        }


class ClimateWorkload:
    """Segment cyclones and rivers with weighted cross entropy and Adam (DeepCAM)."""

    def __init__(self, config: ClimateConfig, sync: TorchSync, lr: float) -> None:
        from validation.models.torch_deeplab import DeepLabV3Plus

        self.sync, self.config = sync, config
        self.model = sync.wrap(DeepLabV3Plus(config))
        self.weights = torch.tensor(config.class_weights, dtype=torch.float32)
        opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.opt = sync.optimizer(opt, unwrap(self.model))

    def modules(self) -> list[nn.Module]:
        return [unwrap(self.model)]

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.opt.zero_grad()
        loss = F.cross_entropy(self.model(x), y, weight=self.weights)
        loss.backward()
        self.sync.sync_grads(unwrap(self.model))
        self.opt.step()
        return {"loss": loss.item()}

    def evaluate(self, x: np.ndarray, y: np.ndarray, ref: np.ndarray | None) -> dict[str, Any]:
        pred = _predict(unwrap(self.model), x).argmax(axis=1)
        conf = confusion_matrix(pred, y, self.config.n_classes)
        return {
            "val_miou": mean_iou(conf),
            "baseline_miou": background_baseline_iou(y, self.config.n_classes),
            "val_iou_per_class": [None if np.isnan(v) else float(v) for v in class_iou(conf)],
        }


class GANWorkload:
    """DCGAN with Adam(2e-4, beta1 0.5) and 1% label flipping (CosmoGAN)."""

    def __init__(self, config: GANConfig, sync: TorchSync, lr: float) -> None:
        from validation.models.torch_dcgan import Discriminator, Generator

        self.sync, self.config = sync, config
        self.gen = sync.wrap(Generator(config))
        self.disc = sync.wrap(Discriminator(config))
        betas = (config.beta1, 0.999)
        self.opt_g = sync.optimizer(
            torch.optim.Adam(self.gen.parameters(), lr, betas=betas), unwrap(self.gen), "gen"
        )
        # D takes two backward passes per step (real batch, fake batch).
        self.opt_d = sync.optimizer(
            torch.optim.Adam(self.disc.parameters(), lr, betas=betas),
            unwrap(self.disc),
            "disc",
            backward_passes=2,
        )
        self.untrained: dict[str, float] = {}

    def modules(self) -> list[nn.Module]:
        return [unwrap(self.gen), unwrap(self.disc)]

    def train_step(self, real: torch.Tensor, _y: torch.Tensor | None) -> dict[str, float]:
        b = real.shape[0]
        fake = self.gen(torch.randn(b, self.config.latent_dim))
        # Real and fake go through D in separate batches (as in DCGAN), so its batch norm
        # cannot tell them apart by batch statistics; each forward has its own backward, and
        # the gradients are exchanged once, after the second.
        self.opt_d.zero_grad()
        d_loss = torch.zeros(())
        for batch, target in ((real, 1.0), (fake.detach(), 0.0)):
            labels = torch.full((b, 1), target)
            flip = torch.rand_like(labels) < self.config.label_flip
            labels = torch.where(flip, 1 - labels, labels)
            local = self.sync.local_backward(self.disc) if target else contextlib.nullcontext()
            with local:
                loss = F.binary_cross_entropy_with_logits(self.disc(batch), labels)
                loss.backward()
            d_loss = d_loss + loss.detach()
        self.sync.sync_grads(unwrap(self.disc))
        self.opt_d.step()
        self.opt_g.zero_grad()
        # G's loss must not leave gradients (nor Horovod/DDP gradient hooks) on D: D is
        # frozen and called unwrapped; its batch-norm statistics still update as before.
        disc = unwrap(self.disc)
        disc.requires_grad_(False)
        try:
            g_loss = F.binary_cross_entropy_with_logits(disc(fake), torch.ones(b, 1))
            g_loss.backward()
        finally:
            disc.requires_grad_(True)
        self.sync.sync_grads(unwrap(self.gen))
        self.opt_g.step()
        return {"loss": d_loss.item(), "g_loss": g_loss.item()}

    def generate(self, n: int) -> np.ndarray:
        """n generated maps (train-mode BN, as DCGANs are usually sampled)."""
        g = torch.Generator().manual_seed(99)
        with torch.no_grad():
            z = torch.randn(n, self.config.latent_dim, generator=g)
            return np.concatenate(
                [unwrap(self.gen)(z[i : i + 64]).numpy() for i in range(0, n, 64)]
            )

    def summary(self, real: np.ndarray) -> dict[str, float]:
        fake = self.generate(len(real))
        return {"hist_chi2": histogram_chi2(fake, real), "spectrum_chi2": spectrum_chi2(fake, real)}

    def evaluate(self, x: np.ndarray, _y: Any, ref: np.ndarray | None) -> dict[str, Any]:
        out: dict[str, Any] = self.summary(x)
        out.update({f"untrained_{k}": v for k, v in self.untrained.items()})
        if ref is not None:
            out["real_hist_chi2"] = histogram_chi2(ref, x)
            out["real_spectrum_chi2"] = spectrum_chi2(ref, x)
        return out


WORKLOADS = {"cosmoflow": CosmoFlowWorkload, "climate": ClimateWorkload, "gan": GANWorkload}


def _learning_rate(spec: RunSpec, config: WorkloadConfig, world: int) -> float:
    if spec.fault == "frozen":
        return 0.0
    # CosmoFlow's SGD scales the learning rate linearly with the global batch (REFERENCE.md).
    if isinstance(config, CosmoFlowConfig) and config.optimizer == "sgd" and spec.weak_scaling:
        return config.lr * world
    return config.lr


def flat_params(modules: list[nn.Module]) -> np.ndarray:
    """All trainable parameters of `modules`, flattened to one float32 vector."""
    return np.concatenate(
        [p.detach().reshape(-1).numpy().astype(np.float32) for m in modules for p in m.parameters()]
    )


def _shuffle_targets(y: np.ndarray | None, seed: int, rank: int) -> np.ndarray | None:
    if y is None:
        return None
    return y[np.random.default_rng([seed, rank, 13]).permutation(len(y))]


def train(spec: RunSpec) -> dict[str, Any]:
    """Run one training job on this rank and write its result file; returns the result."""
    started = time.time()
    threads = spec.threads or threads_per_rank(rank_info().local_world_size)
    idle = idle_comm_wanted(spec.comm_priority, threads, gpu=torch.cuda.is_available())
    sync = TorchSync(spec.sync, spec.fault, idle)
    rank, world = sync.rank, sync.world
    torch.set_num_threads(threads)
    config = effective_config(spec, world)
    local_batch = config.global_batch // world
    progress = Progress(f"{spec.suite}/pytorch {rank}/{world}", enabled=rank == 0)
    progress.say(
        f"{spec.size} config, sync={sync.mode}, {threads} threads/rank, "
        f"global batch {config.global_batch}, fault={spec.fault}"
    )

    shard = shard_indices(config.train_samples, rank, world, spec.fault)
    x_np, y_np = load_arrays(config, spec.seed, shard, "train", spec.data_dir)
    if spec.fault == "shuffled-targets":
        y_np = _shuffle_targets(y_np, spec.seed, rank)
    positions = np.arange(len(shard))

    torch.manual_seed(spec.seed + rank)  # ranks differ until the initial broadcast
    lr = _learning_rate(spec, config, world)
    workload = WORKLOADS[spec.suite](config, sync, lr)
    val_x = val_y = ref_x = None
    if rank == 0:
        n_val = config.val_samples
        val_x, val_y = load_arrays(
            config, spec.seed, VAL_OFFSET + np.arange(n_val), "val", spec.data_dir
        )
        if isinstance(workload, GANWorkload):
            ref_x, _ = load_arrays(
                config, spec.seed, 2 * VAL_OFFSET + np.arange(n_val), "ref", spec.data_dir
            )
            workload.untrained = workload.summary(val_x)
    torch.manual_seed(spec.seed + 7919 * rank)  # rank-specific dropout and latent noise

    steps_per_epoch = len(shard) // local_batch
    epochs = config.epochs if spec.steps is None else -(-spec.steps // steps_per_epoch)
    total = steps_per_epoch * epochs if spec.steps is None else spec.steps
    history: dict[str, list[float]] = {}
    epoch_loss: list[float] = []
    step_seconds: list[float] = []
    step = 0
    warmup = steps_per_epoch if epochs > 1 else min(2, total - 1)
    # The schedule spans the configured epochs; runs cut to --steps (throughput, 1-vs-N
    # consistency, smoke runs) keep the base rate, so they compare like with like.
    scheduled = isinstance(workload, CosmoFlowWorkload) and spec.steps is None
    for epoch in range(epochs):
        order = positions[epoch_order(positions, spec.seed, epoch, rank, spec.shuffle)]
        losses = []
        for s in range(steps_per_epoch):
            if step >= total:
                break
            pick = order[s * local_batch : (s + 1) * local_batch]
            xb = torch.from_numpy(x_np[pick])
            yb = torch.from_numpy(y_np[pick]) if y_np is not None else None
            if scheduled:
                workload.set_lr(lr * lr_factor(config, step, steps_per_epoch))
            t0 = time.perf_counter()
            values = workload.train_step(xb, yb)
            if spec.fault == "straggler" and rank > 0:
                time.sleep(max(0.05, 2 * (time.perf_counter() - t0)))
            dt = time.perf_counter() - t0
            step += 1
            if step > warmup:
                step_seconds.append(dt)
            for k, v in values.items():
                history.setdefault(k, []).append(v)
            losses.append(values["loss"])
            progress.step(epoch, epochs, step, total, values["loss"])
        epoch_loss.append(float(np.mean(losses)) if losses else float("nan"))

    metrics: dict[str, Any] = {}
    if rank == 0 and val_x is not None:
        metrics = workload.evaluate(val_x, val_y, ref_x)
        progress.say(
            "validation "
            + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        )
    params = flat_params(workload.modules())
    if spec.save_params:
        save_params(spec.out_dir, spec.tag, rank, params)
    result = {
        "suite": spec.suite,
        "framework": "pytorch",
        "size": spec.size,
        "tag": spec.tag,
        "rank": rank,
        "world_size": world,
        "sync": sync.mode,
        "fault": spec.fault,
        "seed": spec.seed,
        "threads": threads,
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "comm_threads_idle": sync.comm_threads_idle,
        "local_batch": local_batch,
        "global_batch": config.global_batch,
        "weak_scaling": spec.weak_scaling,
        "steps": step,
        "epochs": epochs,
        "step_loss": history,
        "epoch_loss": epoch_loss,
        **throughput(local_batch, step_seconds),
        "timed_steps": len(step_seconds),
        "metrics": metrics,
        "param_digest": hashlib.sha256(params.tobytes()).hexdigest(),
        "param_count": int(params.size),
        "shard": {
            "n": len(shard),
            "digest": indices_digest(shard),
            "indices": shard.tolist() if len(shard) <= 100_000 else None,
        },
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
        "host": socket.gethostname(),
        "wall_s": time.time() - started,
    }
    write_rank_result(spec.out_dir, spec.tag, rank, result)
    sync.barrier()
    # Release the DDP wrappers (and their reducers) before the process group they use, not
    # at interpreter exit: once, a rank that had finished and written its result died at
    # exit with "terminate called without an active exception" (SIGSEGV, 1 run in 4).
    del workload
    gc.collect()
    sync.close()
    return result
