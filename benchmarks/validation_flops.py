"""CosmoFlow training-step FLOP/s (PyTorch, counted by FlopCounterMode) vs measured fp32
matmul peak on this CPU."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from validation_common import save

from validation.config import workload_config
from validation.models.torch_cosmoflow import CosmoFlowNet


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def step_rate(size: str, batch: int, steps: int) -> dict[str, float]:
    """GFLOP per step and achieved GFLOP/s of forward+backward+SGD."""
    config = workload_config("cosmoflow", size)
    model = CosmoFlowNet(config)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 4, config.size, config.size, config.size)
    y = torch.zeros(batch, 4)

    def step() -> None:
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t) / steps
    return {
        "batch": batch,
        "gflop_per_step": flops / 1e9,
        "step_s": dt,
        "gflop_per_s": flops / dt / 1e9,
    }


def main() -> None:
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    peak = matmul_peak()
    small = step_rate("small", 16, 10)
    full = step_rate("full", 1, 2)
    save(
        "validation_flops",
        {
            "matmul_fp32_peak_gflop_s": peak,
            "cosmoflow_small": {**small, "fraction_of_peak": small["gflop_per_s"] / peak},
            "cosmoflow_full_128": {**full, "fraction_of_peak": full["gflop_per_s"] / peak},
        },
    )


if __name__ == "__main__":
    main()
