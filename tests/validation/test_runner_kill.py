"""A job past its time limit is killed with everything it started, silent or not."""

from __future__ import annotations

import os
import time
from pathlib import Path

from validation.runner import stream_subprocess


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (reaped later by init) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_a_silent_job_is_killed_at_its_limit_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; echo started; sleep 300"
    started = time.monotonic()
    code, tail = stream_subprocess(["sh", "-c", script], dict(os.environ), timeout=2)
    assert time.monotonic() - started < 60
    assert code != 0
    assert tail[0] == "started" and "killed after 2 s" in tail[-1]
    child = int(pids.read_text())
    for _ in range(50):
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child), "the job's background child survived the kill"


def test_a_job_within_its_limit_keeps_its_exit_code_and_output() -> None:
    code, tail = stream_subprocess(["sh", "-c", "echo one; echo two; exit 3"], {}, timeout=60)
    assert code == 3 and tail == ["one", "two"]
