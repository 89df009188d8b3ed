"""Build progress on the terminal: a line per Containerfile step, a spinner for the current one."""

from __future__ import annotations

import re
import time
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.status import Status

STEP_LINE = re.compile(r"^STEP (?P<index>\d+)/(?P<total>\d+): (?P<text>.*)$")


class BuildProgress:
    """Feed it every output line of a build (on_line); it shows steps and their durations."""

    def __init__(self, console: Console | None = None, *, echo: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.echo = echo
        self.current: str | None = None
        self.started = time.monotonic()
        self._status: Status | None = None

    def __enter__(self) -> BuildProgress:
        if self.console.is_terminal:
            self._status = self.console.status("starting build ...")
            self._status.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish_step(ok=exc_type is None)
        if self._status is not None:
            self._status.stop()

    def on_line(self, line: str) -> None:
        """Take one output line from the engine."""
        match = STEP_LINE.match(line)
        if match:
            self._finish_step(ok=True)
            self.current = f"STEP {match['index']}/{match['total']}: {_short(match['text'])}"
            self.started = time.monotonic()
            if self._status is not None:
                self._status.update(self.current)
            else:
                self.console.print(self.current, markup=False)
        elif self.echo:
            self.console.print(f"  {line}", markup=False)

    def _finish_step(self, ok: bool) -> None:
        if self.current is None or self._status is None:
            return
        mark = "[green]done[/]" if ok else "[red]stopped[/]"
        elapsed = time.monotonic() - self.started
        text = f"{mark} {escape(self.current)}  [dim]{elapsed:.1f} s[/]"
        self.console.print(text, highlight=False)
        self.current = None


def _short(text: str, width: int = 90) -> str:
    """One line, at most width characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
