"""stream_tool: long commands logged line by line and stopped with their descendants."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from stackbuild.tools import stream_tool


def test_output_goes_to_the_log_and_the_callback(tmp_path: Path) -> None:
    seen: list[str] = []
    log = tmp_path / "logs" / "run.log"
    result = stream_tool(
        ["sh", "-c", "echo one; echo two >&2; exit 3"], log_path=log, on_line=seen.append
    )
    assert result.returncode == 3
    assert seen == ["one", "two"]
    assert log.read_text().splitlines()[1:] == ["one", "two"]


def test_interrupt_stops_the_command_and_its_detached_children(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    # The grandchild leaves the process group (setsid), as container runtimes do.
    script = f"setsid sh -c 'echo $$ > {marker}; exec sleep 300' & wait"
    # Python keeps SIGINT ignored when it starts with it ignored (a background job of a
    # non-interactive shell, nohup): Ctrl-C's handler is installed here explicitly.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            stream_tool(["sh", "-c", script], log_path=tmp_path / "run.log", grace_s=2)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    child = int(marker.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()
    assert "interrupted" in (tmp_path / "run.log").read_text()
