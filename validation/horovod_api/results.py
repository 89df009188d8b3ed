"""Check results of one rank: values against references, expected errors, the summary line."""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Verdicts: the value matched, an unsupported API failed with an error that names it,
#: or the check failed (wrong value, wrong error, an exception).
OK, UNSUPPORTED, FAILED = "ok", "unsupported", "FAILED"

#: The API families each program checks (its summary line lists those it ran).
FAMILIES = {
    "tensorflow": (
        "allgather",
        "alltoall",
        "barrier",
        "broadcast",
        "collectives",
        "elastic",
        "grouped",
        "join",
        "keras_callbacks",
        "objects",
        "optimizer",
        "partial_tape",
        "process_sets",
        "reducescatter",
        "sync_batch_norm",
        "tape",
        "timeline",
        "unsupported",
    ),
    "torch": (
        "allgather",
        "alltoall",
        "barrier",
        "broadcast",
        "collectives",
        "elastic",
        "grouped",
        "join",
        "objects",
        "optimizer",
        "process_sets",
        "reducescatter",
        "sync_batch_norm",
        "timeline",
    ),
}

_CHECK = re.compile(
    r"\[rank (\d+)\] (tensorflow|torch) ([a-z_]+)/(.+?): (ok|unsupported|FAILED)(?= |$)", re.M
)
_SUMMARY = re.compile(
    r"\[rank (\d+)\] horovod_api (\S+) (PASSED|FAILED) size=(\d+) controller=([a-z]+) checks=(\d+) "
    r"failed=(\d+) unsupported=(\d+) families=([a-z_,]*)"
)


def parse_checks(output: str) -> dict[tuple[int, str], str]:
    """(rank, 'family/name') -> verdict, from a launcher's combined output."""
    return {(int(m[1]), f"{m[3]}/{m[4]}"): m[5] for m in _CHECK.finditer(output)}


def parse_summaries(output: str) -> dict[int, dict[str, Any]]:
    """rank -> its summary line's fields, from a launcher's combined output."""
    return {
        int(m[1]): {
            "framework": m[2],
            "verdict": m[3],
            "size": int(m[4]),
            "controller": m[5],
            "checks": int(m[6]),
            "failed": int(m[7]),
            "unsupported": int(m[8]),
            "families": tuple(sorted(filter(None, m[9].split(",")))),
        }
        for m in _SUMMARY.finditer(output)
    }


@dataclass
class Checks:
    """The results one rank collects, printed as it goes."""

    framework: str
    rank: int
    size: int
    results: list[tuple[str, str, str]] = field(default_factory=list)  # family, name, verdict

    def _record(self, family: str, name: str, verdict: str, detail: str) -> bool:
        self.results.append((family, name, verdict))
        line = f"[rank {self.rank}] {self.framework} {family}/{name}: {verdict} {detail}"
        print(line.rstrip(), flush=True)
        return verdict != FAILED

    def close(
        self, family: str, name: str, got: Any, want: Any, atol: float = 1e-5, rtol: float = 1e-5
    ) -> bool:
        """Record whether `got` equals the reference `want` (same shape, within tolerance)."""
        got_a, want_a = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        ok = got_a.shape == want_a.shape and bool(np.allclose(got_a, want_a, atol=atol, rtol=rtol))
        detail = f"got={_short(got_a)} want={_short(want_a)}"
        return self._record(family, name, OK if ok else FAILED, detail)

    def true(self, family: str, name: str, condition: bool, detail: str) -> bool:
        """Record a condition that is not a plain value comparison."""
        return self._record(family, name, OK if condition else FAILED, detail)

    def unsupported(
        self,
        family: str,
        name: str,
        call: Callable[[], Any],
        api: str,
        errors: tuple[type[Exception], ...] = (NotImplementedError,),
    ) -> bool:
        """`call` must raise one of `errors` with a message naming `api` (what users are told)."""
        try:
            call()
        except errors as exc:
            named = api in str(exc)
            detail = f"{type(exc).__name__}: {exc}"
            return self._record(family, name, UNSUPPORTED if named else FAILED, detail)
        except Exception as exc:  # the wrong error is what this check exists to catch
            return self._record(family, name, FAILED, f"{type(exc).__name__}: {exc}")
        return self._record(family, name, FAILED, "expected NotImplementedError, it ran")

    @contextmanager
    def family(self, family: str) -> Iterator[None]:
        """Run one family's checks; an exception fails the family instead of the program."""
        try:
            yield
        except Exception as exc:
            traceback.print_exc()
            self._record(family, "raised", FAILED, f"{type(exc).__name__}: {exc}")

    def summary(self, controller: str) -> bool:
        """Print the summary line the tests read; True when nothing failed."""
        families = sorted({family for family, _name, _verdict in self.results})
        failed = [f"{f}/{n}" for f, n, v in self.results if v == FAILED]
        unsupported = [f"{f}/{n}" for f, n, v in self.results if v == UNSUPPORTED]
        verdict = "FAILED" if failed or not self.results else "PASSED"
        for name in failed:
            print(f"[rank {self.rank}] {self.framework} failed check: {name}", flush=True)
        print(
            f"[rank {self.rank}] horovod_api {self.framework} {verdict} size={self.size} "
            f"controller={controller} checks={len(self.results)} failed={len(failed)} "
            f"unsupported={len(unsupported)} families={','.join(families)}",
            flush=True,
        )
        return verdict == "PASSED"


def _short(a: np.ndarray) -> str:
    flat = a.ravel()
    text = np.array2string(flat[:8], precision=5, separator=",")
    return text if flat.size <= 8 else f"{text[:-1]},...] ({flat.size} values)"
