"""Plain progress lines while training (rank 0 only; flushed so launchers show them live)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Prints `[suite/framework rank/world] ...` lines at most every `interval` seconds."""

    def __init__(self, label: str, enabled: bool, interval: float = 5.0) -> None:
        self.label, self.enabled, self.interval = label, enabled, interval
        self._last = 0.0

    def step(self, epoch: int, epochs: int, step: int, steps: int, loss: float) -> None:
        """Report a training step, rate-limited."""
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.interval or step == steps):
            self._last = now
            self.say(f"epoch {epoch + 1}/{epochs} step {step}/{steps} loss {loss:.4f}")

    def say(self, text: str) -> None:
        """Print one line."""
        if self.enabled:
            print(f"[{self.label}] {text}", file=sys.stdout, flush=True)
