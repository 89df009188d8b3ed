"""Horovod's public API in the built CPU images: for each image's framework, 2 ranks under
horovodrun with Gloo and with MPI run `python -m validation.horovod_api`, every API family
checked against references (recipes/patches/horovod/0.28.1/API.md is the audit).

The images are the ones tests/engine/test_cpu_stack.py validates (the session's
cpu_stack_build, no extra builds). The checkout's validation/horovod_api is mounted over the
image's copy, so the programs are the ones under test even in an image built earlier.
About 40-60 s a run on 2 cores.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import variant_params
from tests.validation.test_horovod_api_native import assert_api_run

pytestmark = [pytest.mark.engine, pytest.mark.stack]

ROOT = Path(__file__).resolve().parents[2]
#: CPU image variant -> the framework its Horovod checks
IMAGES = {"pytorch-cpu": "torch", "tensorflow-cpu": "tensorflow"}
IN_IMAGE = "/opt/stackbuild/validation/horovod_api"


@pytest.mark.parametrize("controller", ["gloo", "mpi"])
@pytest.mark.parametrize("variant", variant_params(*IMAGES))
def test_horovod_api_two_ranks_in_the_image(
    cpu_stack_build: Callable[[str], tuple[Path, dict[str, Any]]], variant: str, controller: str
) -> None:
    _folder, manifest = cpu_stack_build(variant)
    framework = IMAGES[variant]
    cmd = [
        "podman", "run", "--rm", "--network=host", "--ipc=host",
        "-v", f"{ROOT / 'validation' / 'horovod_api'}:{IN_IMAGE}:ro",
        "-e", "TF_CPP_MIN_LOG_LEVEL=2",
        str(manifest["refs"][0]),
        "horovodrun", "-np", "2", f"--{controller}",
        "python", "-m", "validation.horovod_api", "--framework", framework,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert_api_run(proc.stdout + proc.stderr, proc.returncode, framework, controller)
