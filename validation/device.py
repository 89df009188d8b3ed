"""Which device a rank trains on: its own GPU on GPU targets where one is visible, else CPU.

Pure decisions (stdlib only): the frameworks count their GPUs and pass the count in, so the
rule is the same for PyTorch and TensorFlow and is tested without a GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from validation.plan import INFO_FILE, needs_gpu

#: --device values: auto picks CUDA on GPU targets (and natively) where a GPU is visible.
DEVICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class DeviceChoice:
    """The device one rank trains on, and why."""

    kind: str  # "cuda" | "cpu"
    index: int | None  # the GPU's index among the visible ones; None on the CPU
    reason: str

    @property
    def name(self) -> str:
        """ "cuda:N" or "cpu" (PyTorch's spelling; TensorFlow's is /GPU:N, /CPU:0)."""
        return f"cuda:{self.index}" if self.kind == "cuda" else "cpu"

    @property
    def is_cuda(self) -> bool:
        """Whether the rank computes on a GPU."""
        return self.kind == "cuda"


def gpu_target(info_file: Path = Path(INFO_FILE)) -> bool | None:
    """Whether this image was built for a GPU target (its recipe names CUDA); None natively
    or where the image carries no expectations (nothing says which target it is)."""
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    expect = info.get("expect") if isinstance(info, dict) else None
    return needs_gpu(expect) if isinstance(expect, dict) else None


def choose_device(
    requested: str, target_gpu: bool | None, gpus_visible: int, local_rank: int
) -> DeviceChoice:
    """The device for local rank `local_rank`: one GPU per local rank (cuda:LOCAL_RANK), or
    the only visible one where the launcher gave each rank its own (CUDA_VISIBLE_DEVICES
    per task); the CPU where none is visible or the target is a CPU target.

    Raises ValueError for a request that cannot be met (--device cuda without a GPU, more
    ranks on a node than GPUs: NCCL refuses two ranks on one GPU)."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; expected one of {', '.join(DEVICES)}")
    if requested == "cpu":
        return DeviceChoice("cpu", None, "--device cpu")
    if requested == "auto" and target_gpu is False:
        return DeviceChoice("cpu", None, "CPU target")
    if gpus_visible < 1:
        if requested == "cuda":
            raise ValueError(
                "--device cuda: no GPU is visible to this rank (no NVIDIA driver or device, "
                "CUDA_VISIBLE_DEVICES empty, or a CPU-only framework build); "
                "run on a GPU node, pass the GPUs into the container, or use --device cpu"
            )
        return DeviceChoice("cpu", None, "no GPU visible: CPU fallback")
    if gpus_visible == 1:
        index = 0
    elif local_rank < gpus_visible:
        index = local_rank
    else:
        raise ValueError(
            f"local rank {local_rank} has no GPU of its own: {gpus_visible} GPUs are visible "
            "on this node; start at most one rank per GPU, or --device cpu"
        )
    target = "GPU target" if target_gpu else "no target recorded"
    return DeviceChoice("cuda", index, f"{target}, {gpus_visible} GPU(s) visible")
