"""The one place stackbuild talks to spython: parse Containerfiles and definitions quietly."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def _quiet() -> Iterator[None]:
    """spython logs warnings (COPY sources absent, ARG skipped) that mean nothing here."""
    from spython.logger import bot

    saved, bot.level = bot.level, -4  # spython's CRITICAL
    try:
        yield
    finally:
        bot.level = saved


def parse_containerfile_text(text: str) -> dict[str, Any]:
    """Stages of a Containerfile as spython recipes, keyed by stage name."""
    from spython.main.parse.parsers import DockerParser

    with _quiet(), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "Containerfile"
        path.write_text(text)
        return dict(DockerParser(str(path)).recipe)


def parse_containerfile(path: Path) -> dict[str, Any]:
    """Stages of a Containerfile file."""
    return parse_containerfile_text(path.read_text())


def parse_definition(path: Path) -> dict[str, Any]:
    """Stages of an Apptainer definition file."""
    from spython.main.parse.parsers import SingularityParser

    with _quiet():
        return dict(SingularityParser(str(path)).recipe)


def write_definition(stages: dict[str, Any]) -> str:
    """An Apptainer definition from spython stage recipes."""
    from spython.main.parse.writers import SingularityWriter

    with _quiet():
        return str(SingularityWriter(stages).convert())
