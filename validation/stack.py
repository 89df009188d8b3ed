"""Probe the framework stack in this environment: oneDNN, CUDA/NCCL, Horovod build.

Everything here runs without a GPU: versions, compiled architectures, library search, the
image's recipe expectations. Kernels, collectives and driver compatibility need a GPU.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path
from typing import Any

from validation.plan import INFO_FILE

# A conv2d that TensorFlow hands to oneDNN when its oneDNN custom ops are on.
_TF_ONEDNN_PROBE = (
    "import tensorflow as tf\n"
    "x = tf.random.normal([2, 16, 16, 4]); k = tf.random.normal([3, 3, 4, 8])\n"
    "tf.nn.conv2d(x, k, 1, 'SAME').numpy()\n"
)


def _run_python(code: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh process of this Python (a crash there cannot take the probe down)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
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
    proc = _run_python(_TF_ONEDNN_PROBE, run_env, timeout)
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


def _version_tuple(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return ".".join(map(str, value))
    return str(value)


def _cudnn_version(code: int | None) -> str | None:
    """cuDNN's version code (9.x: major*10000 + minor*100 + patch) as major.minor.patch."""
    if not code:
        return None
    major, rest = divmod(int(code), 10000)
    minor, patch = divmod(rest, 100)
    return f"{major}.{minor}.{patch}"


def torch_info() -> dict[str, Any]:
    """PyTorch version, its CUDA build facts, and the distributed backends/devices it sees."""
    import torch
    import torch.distributed as dist

    cuda_build = torch.version.cuda
    info: dict[str, Any] = {
        "version": torch.__version__,
        "cuda_build": cuda_build,
        "cuda_available": torch.cuda.is_available(),
        "gpu_count": torch.cuda.device_count(),
        "nccl_available": bool(dist.is_available() and dist.is_nccl_available()),
        "nccl_version": None,
        "gloo_available": bool(dist.is_available() and dist.is_gloo_available()),
        "mpi_available": bool(dist.is_available() and dist.is_mpi_available()),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "arch_list": [],
        "cudnn_version": None,
    }
    if cuda_build:
        # These read the CUDA libraries' own version calls: no GPU needed.
        info["arch_list"] = list(torch.cuda.get_arch_list())
        info["nccl_version"] = _version_tuple(torch.cuda.nccl.version())
        info["cudnn_version"] = _cudnn_version(torch.backends.cudnn.version())
    return info


def tf_info() -> dict[str, Any]:
    """TensorFlow version, build info, GPUs, and whether oneDNN really runs."""
    import tensorflow as tf

    build = dict(tf.sysconfig.get_build_info())
    return {
        "version": tf.__version__,
        "keras_version": getattr(tf.keras, "__version__", None) or _keras_version(),
        "cuda_build": bool(build.get("is_cuda_build")),
        "build_cuda_version": build.get("cuda_version"),
        "build_cudnn_version": build.get("cudnn_version"),
        "arch_list": list(build.get("cuda_compute_capabilities") or []),
        "gpu_count": len(tf.config.list_physical_devices("GPU")),
        "onednn": tf_onednn_primitives(),
    }


def cuda_wheels() -> dict[str, str]:
    """Installed NVIDIA CUDA wheels: distribution name -> version."""
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(("nvidia-", "cuda-toolkit")):
            found[name] = dist.version
    return dict(sorted(found.items()))


def cuda_userspace(wheels: dict[str, str]) -> dict[str, str | None]:
    """CUDA runtime, cuDNN and NCCL versions that the installed wheels carry."""

    def first(*names: str) -> str | None:
        return next((wheels[n] for n in names if n in wheels), None)

    return {
        "cudart": first(
            "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12"
        ),
        "cudnn": first("nvidia-cudnn-cu13", "nvidia-cudnn-cu12"),
        "nccl": first("nvidia-nccl-cu13", "nvidia-nccl-cu12"),
    }


def compilers_present() -> dict[str, list[str]]:
    """nvcc and C compilers on PATH or in the CUDA wheels (a runtime image has none)."""
    site = Path(sysconfig.get_path("purelib"))
    on_path = [c for c in ("nvcc", "gcc", "cc", "c++", "g++") if shutil.which(c)]
    in_wheels = sorted(str(p) for p in site.glob("nvidia/*/bin/nvcc"))
    return {"on_path": on_path, "nvcc_in_site_packages": in_wheels}


def libcuda_files() -> list[str]:
    """libcuda libraries in the image's library folders (a stub would shadow the driver's)."""
    dirs = [Path(sysconfig.get_path("purelib")), Path("/usr/lib"), Path("/usr/local")]
    found: list[str] = []
    for folder in dirs:
        if folder.is_dir():
            found += sorted(str(p) for p in folder.rglob("libcuda.so*"))
    return found


def horovod_import_clean_env(framework: str, timeout: float = 180) -> dict[str, Any]:
    """Import Horovod's framework module with LD_LIBRARY_PATH empty, as a site runtime may."""
    module = "horovod.torch" if framework == "pytorch" else "horovod.tensorflow"
    # /proc/self/maps after the import: which MPI, NCCL and CUDA runtime the process loaded.
    code = (
        f"import {module} as hvd, json, re\n"
        "maps = open('/proc/self/maps').read()\n"
        "libs = sorted(set(re.findall(r'(/\\S*/(?:libmpi|libnccl|libcudart)[^/\\s]*)', maps)))\n"
        "print(json.dumps({'nccl_built': int(hvd.nccl_built()), "
        "'cuda_built': bool(hvd.cuda_built()), 'mpi_built': bool(hvd.mpi_built()), "
        "'gloo_built': bool(hvd.gloo_built()), 'loaded': libs}))"
    )
    env = {**os.environ, "LD_LIBRARY_PATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = _run_python(code, env, timeout)
    result: dict[str, Any] = {"ok": proc.returncode == 0, "module": module}
    if proc.returncode == 0:
        result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    else:
        result["error"] = proc.stderr.strip().splitlines()[-3:]
    return result


def image_info(path: Path = Path(INFO_FILE)) -> dict[str, Any] | None:
    """The image's stackbuild-info.json (recipe, variant, expectations); None natively."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


ISA_FILE = Path(INFO_FILE).with_name("horovod-isa.json")


def horovod_isa(path: Path = ISA_FILE) -> dict | None:
    """What the builder stage counted in Horovod's compiled libraries (AVX-512 use)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


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
    image = image_info()
    info["image"] = image
    info["expect"] = (image or {}).get("expect")
    wheels = cuda_wheels()
    info["cuda"] = {
        "wheels": wheels,
        "userspace": cuda_userspace(wheels),
        "libcuda": libcuda_files(),
    }
    info["compilers"] = compilers_present()
    info["horovod_isa"] = horovod_isa()
    if info["horovod"].get("available"):
        info["horovod"]["clean_env_import"] = horovod_import_clean_env(framework)
    return info
