"""The three workloads' PyTorch steps and the engine that runs them in `train_loop`."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from validation.config import ClimateConfig, CosmoFlowConfig, GANConfig, WorkloadConfig
from validation.device import DeviceChoice, choose_device, gpu_target
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
)
from validation.spec import RunSpec
from validation.torch_dist import TorchSync, unwrap
from validation.train_loop import EpochCallback, run_training

EVAL_BATCH = 16


def _predict(model: nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [
            model(torch.from_numpy(x[i : i + EVAL_BATCH]).to(device)).cpu().numpy()
            for i in range(0, len(x), EVAL_BATCH)
        ]
    model.train()
    return np.concatenate(out)


class CosmoFlowWorkload:
    """Regress 4 parameters with MSE and SGD momentum (MLPerf HPC CosmoFlow)."""

    def __init__(self, config: CosmoFlowConfig, sync: TorchSync, lr: float) -> None:
        from validation.models.torch_cosmoflow import CosmoFlowNet

        self.sync = sync
        self.model = sync.wrap(CosmoFlowNet(config).to(sync.device))
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

    def learning_rate(self) -> float:
        """The rate the optimizer holds now."""
        return float(self.opt.param_groups[0]["lr"])

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.opt.zero_grad()
        loss = F.mse_loss(self.model(x), y)
        loss.backward()
        self.sync.sync_grads(unwrap(self.model))
        self.opt.step()
        return {"loss": loss.item()}

    def evaluate(self, x: np.ndarray, y: np.ndarray, ref: np.ndarray | None) -> dict[str, Any]:
        pred = _predict(unwrap(self.model), x, self.sync.device)
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
        self.model = sync.wrap(DeepLabV3Plus(config).to(sync.device))
        self.weights = torch.tensor(config.class_weights, dtype=torch.float32, device=sync.device)
        opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.opt = sync.optimizer(opt, unwrap(self.model))

    def modules(self) -> list[nn.Module]:
        return [unwrap(self.model)]

    def learning_rate(self) -> float:
        """The rate the optimizer holds now."""
        return float(self.opt.param_groups[0]["lr"])

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        self.opt.zero_grad()
        loss = F.cross_entropy(self.model(x), y, weight=self.weights)
        loss.backward()
        self.sync.sync_grads(unwrap(self.model))
        self.opt.step()
        return {"loss": loss.item()}

    def evaluate(self, x: np.ndarray, y: np.ndarray, ref: np.ndarray | None) -> dict[str, Any]:
        pred = _predict(unwrap(self.model), x, self.sync.device).argmax(axis=1)
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
        self.gen = sync.wrap(Generator(config).to(sync.device))
        self.disc = sync.wrap(Discriminator(config).to(sync.device))
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

    def learning_rate(self) -> float:
        """The rate the discriminator's optimizer holds now (G's is the same)."""
        return float(self.opt_d.param_groups[0]["lr"])

    def train_step(self, real: torch.Tensor, _y: torch.Tensor | None) -> dict[str, float]:
        b, device = real.shape[0], self.sync.device
        fake = self.gen(torch.randn(b, self.config.latent_dim, device=device))
        # Real and fake go through D in separate batches (as in DCGAN), so its batch norm
        # cannot tell them apart by batch statistics; each forward has its own backward, and
        # the gradients are exchanged once, after the second.
        self.opt_d.zero_grad()
        d_loss = torch.zeros((), device=device)
        for batch, target in ((real, 1.0), (fake.detach(), 0.0)):
            labels = torch.full((b, 1), target, device=device)
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
            g_loss = F.binary_cross_entropy_with_logits(disc(fake), torch.ones(b, 1, device=device))
            g_loss.backward()
        finally:
            disc.requires_grad_(True)
        self.sync.sync_grads(unwrap(self.gen))
        self.opt_g.step()
        return {"loss": d_loss.item(), "g_loss": g_loss.item()}

    def generate(self, n: int) -> np.ndarray:
        """n generated maps (train-mode BN, as DCGANs are usually sampled)."""
        g = torch.Generator().manual_seed(99)  # on the CPU: the same latents on any device
        gen = unwrap(self.gen)
        with torch.no_grad():
            z = torch.randn(n, self.config.latent_dim, generator=g).to(self.sync.device)
            return np.concatenate([gen(z[i : i + 64]).cpu().numpy() for i in range(0, n, 64)])

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


def flat_params(modules: list[nn.Module]) -> np.ndarray:
    """All trainable parameters of `modules`, flattened to one float32 vector."""
    return np.concatenate(
        [
            p.detach().reshape(-1).cpu().numpy().astype(np.float32)
            for m in modules
            for p in m.parameters()
        ]
    )


def torch_device(choice: DeviceChoice) -> torch.device:
    """PyTorch's device for a `DeviceChoice`."""
    return torch.device(choice.name)


class TorchEngine:
    """PyTorch on one rank: DDP, manual all-reduce or Horovod, on its GPU or the CPU."""

    framework = "pytorch"

    def __init__(self, spec: RunSpec) -> None:
        info = rank_info()
        self.threads = spec.threads or threads_per_rank(info.local_world_size)
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self.device = choose_device(spec.device, gpu_target(), gpus, info.local_rank)
        device = torch_device(self.device)
        self.device_name = torch.cuda.get_device_name(device) if self.device.is_cuda else "CPU"
        if self.device.is_cuda:
            # Fixed input shapes: let cuDNN pick its fastest convolution algorithms once.
            torch.backends.cudnn.benchmark = True
        idle = idle_comm_wanted(spec.comm_priority, self.threads, gpu=self.device.is_cuda)
        self.sync_engine = TorchSync(spec.sync, spec.fault, idle, device)
        self.rank, self.world = self.sync_engine.rank, self.sync_engine.world
        self.sync = self.sync_engine.mode
        self.comm_threads_idle = self.sync_engine.comm_threads_idle
        self.comm_backend = self.sync_engine.backend
        self.suite = spec.suite
        torch.set_num_threads(self.threads)

    def layout(self, x: np.ndarray) -> np.ndarray:
        return x  # channels first, as the data come

    def seed_init(self, seed: int) -> None:
        torch.manual_seed(seed)

    def seed_steps(self, seed: int) -> None:
        torch.manual_seed(seed)

    def build(self, config: WorkloadConfig, lr: float) -> Any:
        return WORKLOADS[self.suite](config, self.sync_engine, lr)  # type: ignore[arg-type]

    def batch(self, x: np.ndarray, y: np.ndarray | None) -> tuple[Any, Any]:
        device = self.sync_engine.device
        xb = torch.from_numpy(x).to(device)
        return xb, (torch.from_numpy(y).to(device) if y is not None else None)

    def params(self, workload: Any) -> np.ndarray:
        return flat_params(workload.modules())

    def placement(self, workload: Any) -> str:
        return str(next(workload.modules()[0].parameters()).device)

    def versions(self) -> dict[str, str]:
        versions = {"torch": torch.__version__}
        if self.device.is_cuda:
            versions["cuda"] = str(torch.version.cuda)
        return versions

    def barrier(self) -> None:
        self.sync_engine.barrier()

    def close(self) -> None:
        self.sync_engine.close()


def train(spec: RunSpec, on_epoch: EpochCallback | None = None) -> dict[str, Any]:
    """Run one PyTorch training job on this rank and write its result file; returns it.

    on_epoch: called after every epoch (`train_loop.run_steps`).
    """
    return run_training(spec, TorchEngine, on_epoch)
