"""A failed job's check shows the rank's own error, not the launcher's banner around it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from validation.runner import failure_excerpt, stream_subprocess

#: Rank 1 prints an error and dies of a segfault; hydra then prints its ten-line BAD
#: TERMINATION banner, which was all a failed check used to show.
RANK = """
import os, signal, time
if int(os.environ["PMI_RANK"]) == 1:
    print("Traceback (most recent call last):", flush=True)
    print("RuntimeError: rank 1 ran out of data", flush=True)
    os.kill(os.getpid(), signal.SIGSEGV)
time.sleep(60)
"""


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no MPICH (scripts/setup-host.sh)")
def test_a_crashed_rank_under_mpich_shows_its_error_and_signal(tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    code, tail = stream_subprocess(
        ["mpiexec", "-n", "2", sys.executable, str(script)], dict(os.environ), timeout=120
    )
    assert code != 0
    assert "BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES" in "\n".join(tail)
    excerpt = failure_excerpt(tail)
    assert excerpt[:2] == [
        "Traceback (most recent call last):",
        "RuntimeError: rank 1 ran out of data",
    ]
    assert "Segmentation fault (signal 11)" in excerpt[-1]
    assert not any("BAD TERMINATION" in line or line.startswith("====") for line in excerpt)


def test_output_that_is_all_banner_is_kept_as_it_is() -> None:
    banner = ["=" * 20, "=   EXIT CODE: 9", "=" * 20]
    assert failure_excerpt(banner) == banner
