"""Horovod's public API, 2 ranks, Gloo and MPI, natively: this Python's Horovod (.venv,
compiled by scripts/native_horovod.py with the recipes' patches) runs
`python -m validation.horovod_api` for TensorFlow and PyTorch. The same programs run in
the CPU images (tests/engine/test_horovod_api_images.py); the audit is
recipes/patches/horovod/0.28.1/API.md."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from validation.horovod_api.results import FAMILIES, parse_checks, parse_summaries

pytestmark = pytest.mark.training
ROOT = Path(__file__).resolve().parents[2]

#: Checks that must report "unsupported" (NotImplementedError/ValueError naming the API)
#: under each controller; any other unsupported or failed check fails the run.
UNSUPPORTED = {
    ("tensorflow", "gloo"): {
        "collectives/allreduce(op=Adasum) under Gloo",
        "unsupported/DistributedOptimizer(op=Adasum) with Keras",
    },
    ("tensorflow", "mpi"): {"unsupported/DistributedOptimizer(op=Adasum) with Keras"},
    ("torch", "gloo"): {
        "collectives/allreduce(op=Adasum) under Gloo",
        "optimizer/DistributedOptimizer(op=Adasum) under Gloo",
    },
    ("torch", "mpi"): set(),
}
#: Checks that must have run and matched their reference: the issue's two reported
#: failures, and Adasum's values where MPI runs it.
REQUIRED_OK = {
    "tensorflow": {
        "sync_batch_norm/output = global-batch normalised",
        "sync_batch_norm/moving_variance",
        "sync_batch_norm/input gradient = global batch norm's",
        "partial_tape/register_local_source(keras.Variable) local",
        "partial_tape/register_local_source(keras.Variable) reduced",
        "optimizer/DistributedOptimizer.apply head/bias",
    },
    "torch": {
        "sync_batch_norm/output = global-batch normalised",
        "sync_batch_norm/input gradient = global batch norm's",
        "optimizer/DistributedOptimizer backward_passes_per_step=2",
    },
}


def assert_api_run(output: str, returncode: int, framework: str, controller: str) -> None:
    """Both ranks passed every family, with exactly the expected unsupported APIs."""
    summaries = parse_summaries(output)
    assert sorted(summaries) == [0, 1], output[-4000:]
    for rank, summary in summaries.items():
        assert summary["verdict"] == "PASSED" and summary["failed"] == 0, (rank, output[-6000:])
        assert (summary["framework"], summary["size"], summary["controller"]) == (
            framework,
            2,
            controller,
        )
        assert summary["families"] == FAMILIES[framework], summary
    assert returncode == 0, output[-3000:]
    checks = parse_checks(output)
    for rank in (0, 1):
        verdicts = {name: v for (r, name), v in checks.items() if r == rank}
        assert {n for n, v in verdicts.items() if v == "unsupported"} == UNSUPPORTED[
            (framework, controller)
        ]
        assert all(v in ("ok", "unsupported") for v in verdicts.values()), verdicts
        required = set(REQUIRED_OK[framework])
        if controller == "mpi":
            required.add("collectives/allreduce(op=Adasum)")
        missing = {name for name in required if verdicts.get(name) != "ok"}
        assert not missing, (rank, missing)


needs_horovod = pytest.mark.skipif(
    importlib.util.find_spec("horovod") is None,
    reason="horovod is not installed in this Python (scripts/setup.d/45-horovod.sh)",
)


@needs_horovod
@pytest.mark.parametrize("controller", ["gloo", "mpi"])
@pytest.mark.parametrize("framework", ["tensorflow", "torch"])
def test_horovod_api_two_ranks_natively(framework: str, controller: str) -> None:
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed in this Python")
    if controller == "mpi" and shutil.which("mpirun") is None:
        pytest.skip("mpirun not found (mpich, scripts/setup-host.sh)")
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [
        str(bindir / "horovodrun"),
        "-np",
        "2",
        f"--{controller}",
        sys.executable,
        "-m",
        "validation.horovod_api",
        "--framework",
        framework,
    ]
    proc = subprocess.run(
        cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert_api_run(proc.stdout + proc.stderr, proc.returncode, framework, controller)
