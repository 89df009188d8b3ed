"""Ranks on Horovod's MPI end without MPI_Finalize, after a last barrier (validation.cli)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

FAKE = """
import sys, types
from validation.cli import exit_without_mpi_finalize
hvd = types.ModuleType("horovod.torch")
hvd.is_initialized = lambda: True
hvd.mpi_enabled = lambda: {mpi}
hvd.size = lambda: {size}
hvd.barrier = lambda: print("barrier", flush=True)
sys.modules["horovod.torch"] = hvd
import atexit
atexit.register(lambda: print("atexit ran (MPI_Finalize would too)", flush=True))
exit_without_mpi_finalize()
print("returned", flush=True)
"""


@pytest.mark.parametrize(
    ("mpi", "size", "printed"),
    [
        (True, 2, ["barrier"]),  # met the others, then gone: no atexit, no finalize
        (False, 2, ["returned", "atexit ran (MPI_Finalize would too)"]),  # Gloo: normal exit
        (True, 1, ["returned", "atexit ran (MPI_Finalize would too)"]),  # alone: nothing to race
    ],
)
def test_only_multi_rank_mpi_runs_skip_finalize(mpi: bool, size: int, printed: list[str]) -> None:
    code = textwrap.dedent(FAKE.format(mpi=mpi, size=size))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:-1] == printed
