"""Probe the framework stack in this environment: oneDNN, CUDA/NCCL, Horovod build."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

# A conv2d that TensorFlow hands to oneDNN when its oneDNN custom ops are on.
_TF_ONEDNN_PROBE = (
    "import tensorflow as tf\n"
    "x = tf.random.normal([2, 16, 16, 4]); k = tf.random.normal([3, 3, 4, 8])\n"
    "tf.nn.conv2d(x, k, 1, 'SAME').numpy()\n"
)


def parse_onednn_verbose(text: str) -> dict[str, int]:
    """Count executed oneDNN primitives by kind from ONEDNN_VERBOSE=1 output."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) > 5 and parts[0] == "onednn_verbose" and "exec" in parts[1:4]:
            kind = parts[parts.index("exec") + 2]
            counts[kind] = counts.get(kind, 0) + 1
    return counts


def tf_onednn_primitives(env: dict[str, str] | None = None, timeout: float = 120) -> dict[str, Any]:
    """Run a conv2d in a fresh TensorFlow process with ONEDNN_VERBOSE=1 and count primitives."""
    run_env = {**os.environ, **(env or {}), "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", _TF_ONEDNN_PROBE],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = proc.stdout + proc.stderr
    return {
        "returncode": proc.returncode,
        "primitives": parse_onednn_verbose(output),
        "custom_ops_on_message": "oneDNN custom operations are on" in output,
        "TF_ENABLE_ONEDNN_OPTS": run_env.get("TF_ENABLE_ONEDNN_OPTS"),
        "tail": output.strip().splitlines()[-3:] if proc.returncode else [],
    }


def parse_check_build(text: str) -> dict[str, dict[str, bool]]:
    """Parse `horovodrun --check-build`: section -> {item: built}."""
    sections: dict[str, dict[str, bool]] = {}
    current: dict[str, bool] | None = None
    for line in text.splitlines():
        header = re.match(r"^Available (.+):\s*$", line.strip())
        if header:
            current = sections.setdefault(header.group(1).lower(), {})
            continue
        item = re.match(r"^\[( |X|x)\]\s+(.+)$", line.strip())
        if item and current is not None:
            current[item.group(2).strip()] = item.group(1).lower() == "x"
    return sections


def horovod_info() -> dict[str, Any]:
    """What Horovod was built with, or why it is unavailable."""
    try:
        import horovod
    except ImportError as exc:
        return {"available": False, "reason": f"import horovod failed: {exc}"}
    info: dict[str, Any] = {"available": True, "version": getattr(horovod, "__version__", "?")}
    # What `horovodrun --check-build` runs, with this Python (a venv's horovodrun is rarely
    # on PATH).
    proc = subprocess.run(
        [sys.executable, "-m", "horovod.runner.launch", "--check-build"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    info["check_build"] = parse_check_build(proc.stdout)
    info["check_build_text"] = proc.stdout
    if proc.returncode != 0:
        info["reason"] = f"horovodrun --check-build failed: {proc.stderr.strip()[-300:]}"
    return info


def torch_info() -> dict[str, Any]:
    """PyTorch version and the distributed backends/devices it sees."""
    import torch
    import torch.distributed as dist

    return {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "gpu_count": torch.cuda.device_count(),
        "nccl_available": bool(dist.is_available() and dist.is_nccl_available()),
        "nccl_version": ".".join(map(str, torch.cuda.nccl.version()))
        if torch.cuda.is_available()
        else None,
        "gloo_available": bool(dist.is_available() and dist.is_gloo_available()),
        "mpi_available": bool(dist.is_available() and dist.is_mpi_available()),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
    }


def tf_info() -> dict[str, Any]:
    """TensorFlow version, build info, GPUs, and whether oneDNN really runs."""
    import tensorflow as tf

    build = dict(tf.sysconfig.get_build_info())
    return {
        "version": tf.__version__,
        "keras_version": getattr(tf.keras, "__version__", None) or _keras_version(),
        "cuda_build": bool(build.get("is_cuda_build")),
        "gpu_count": len(tf.config.list_physical_devices("GPU")),
        "onednn": tf_onednn_primitives(),
    }


def _keras_version() -> str | None:
    try:
        import keras

        return str(keras.__version__)
    except ImportError:
        return None


def probe_stack(framework: str) -> dict[str, Any]:
    """Everything the stack checks need about `framework` in this environment."""
    info: dict[str, Any] = {"framework": framework, "python": sys.version.split()[0]}
    info[framework] = torch_info() if framework == "pytorch" else tf_info()
    info["horovod"] = horovod_info()
    return info
