"""Gradient exchange for PyTorch: DDP, a manual all-reduce (for fault injection), or Horovod."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from validation.launch_env import (
    RankInfo,
    export_rendezvous,
    horovod_on_mpi,
    idle_priority_threads,
    rank_info,
)


def backend_for(device: torch.device) -> str:
    """torch.distributed's backend for tensors on `device`: NCCL for CUDA tensors, gloo for
    CPU ones (NCCL cannot reduce CPU tensors, so a GPU image's CPU fallback must not pick it
    just because CUDA is installed)."""
    return "nccl" if device.type == "cuda" else "gloo"


class TorchSync:
    """Starts the process group and wraps models/optimizers the way `mode` says."""

    def __init__(
        self,
        mode: str,
        fault: str = "none",
        idle_comm: bool = False,
        device: torch.device | None = None,
    ) -> None:
        """idle_comm: the engine's background threads run at idle priority
        (launch_env.idle_priority_threads); their names end up in `comm_threads_idle`.
        device: where this rank's tensors live (default CPU); a CUDA device is made the
        current one and torch.distributed uses NCCL for it, gloo for CPU tensors."""
        self.fault = fault
        self.device = device or torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL and Horovod use the current device
        self.hvd: Any = None
        self.comm_threads_idle: list[str] = []
        info = rank_info()
        if mode == "auto":
            mode = "ddp" if info.world_size > 1 else "none"
        if fault in ("no-broadcast", "no-allreduce", "grad-sum") and mode == "ddp":
            mode = "manual"  # DDP always broadcasts and averages; faults need the manual path
        self.mode = mode
        if mode == "horovod":
            import horovod.torch as hvd

            with idle_priority_threads(idle_comm) as self.comm_threads_idle:
                hvd.init()
            self.hvd = hvd
            info = RankInfo(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), "horovod")
        elif info.world_size > 1 or mode in ("ddp", "manual"):
            # Asked for by name, DDP runs at one rank too (a 1-rank group): that is how a
            # single GPU exercises NCCL (benchmarks/gpu_device_check.sh). The plans' 1-rank
            # baselines pass no --sync and stay plain.
            export_rendezvous(info)
            with idle_priority_threads(idle_comm) as self.comm_threads_idle:
                dist.init_process_group(
                    backend=backend_for(self.device), rank=info.rank, world_size=info.world_size
                )
        self.info = info

    @property
    def backend(self) -> str:
        """What moves this rank's tensors: the process group's backend, or Horovod's
        operations for them (NCCL for GPU tensors where Horovod was built with it)."""
        if self.mode == "horovod":
            controller = "mpi" if self.hvd.mpi_enabled() else "gloo"
            if self.device.type == "cuda" and self.hvd.nccl_built():
                return f"horovod-nccl+{controller}"
            return f"horovod-{controller}"
        if dist.is_available() and dist.is_initialized():
            return str(dist.get_backend())
        return "none"

    @property
    def rank(self) -> int:
        return self.info.rank

    @property
    def world(self) -> int:
        return self.info.world_size

    def wrap(self, model: nn.Module) -> nn.Module:
        """Make ranks start equal (unless the fault says not to) and return the model to train."""
        if self.mode == "ddp":
            # Buffers (batch-norm running statistics) are made equal at the start, then each
            # rank keeps its own, as under Horovod: training does not read them, evaluation
            # runs on rank 0, and rank 0's are what DDP would broadcast at every forward, at
            # the cost of one collective each.
            ddp = nn.parallel.DistributedDataParallel
            ids = {"device_ids": [self.device]} if self.device.type == "cuda" else {}
            if "forward_sync_buffers" in inspect.signature(ddp).parameters:
                return ddp(model, forward_sync_buffers=False, **ids)
            return ddp(model, broadcast_buffers=False, **ids)  # older torch: no init sync
        if self.mode == "manual" and self.fault != "no-broadcast":
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)
        if self.mode == "horovod":
            self.hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        return model

    def optimizer(
        self,
        opt: torch.optim.Optimizer,
        model: nn.Module,
        name: str = "model",
        backward_passes: int = 1,
    ) -> torch.optim.Optimizer:
        """Horovod averages inside its optimizer; other modes return `opt` unchanged.

        backward_passes: backward() calls per step() (their gradients add up locally, as
        without Horovod, and are averaged across ranks once).
        """
        if self.mode != "horovod":
            return opt
        prefix = f"{name}."  # tensor names must match on every rank
        named = [(prefix + n, p) for n, p in model.named_parameters()]
        wrapped = self.hvd.DistributedOptimizer(
            opt, named_parameters=named, backward_passes_per_step=backward_passes
        )
        self.hvd.broadcast_optimizer_state(wrapped, root_rank=0)
        return wrapped

    def local_backward(self, model: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Around a forward and backward whose gradients the next backward adds to before
        they are exchanged: DDP's no_sync (one all-reduce per step instead of one per
        backward); Horovod's optimizer counts backward passes itself; others: nothing."""
        if isinstance(model, nn.parallel.DistributedDataParallel):
            return model.no_sync()
        return contextlib.nullcontext()

    def sync_grads(self, model: nn.Module) -> None:
        """Manual mode: all-reduce gradients (average, or the injected fault)."""
        if self.mode != "manual" or self.fault == "no-allreduce":
            return
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                if self.fault != "grad-sum":
                    p.grad /= self.world

    def barrier(self) -> None:
        """Wait for all ranks."""
        if self.mode == "horovod":
            self.hvd.allreduce(torch.zeros(1, device=self.device), name="barrier")
        elif dist.is_available() and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        """Tear down the process group, all ranks together: rank 0 evaluates after training
        while the others are done, and a rank that destroys its group then closes its gloo
        connections under rank 0 (an abort at exit was seen, rarely, in that window)."""
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
        if self.mode == "horovod" and not horovod_on_mpi(self.hvd):
            self.hvd.shutdown()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
