"""Shared fixtures: shipped recipes, recipe files written by a test, running the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.cli import main

RECIPES = PROJECT_ROOT / "recipes"


@pytest.fixture
def cpu_recipe_text() -> str:
    return (RECIPES / "cpu.yaml").read_text()


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write recipe text to tmp_path/NAME.yaml, with the shipped patches beside it."""

    def write(text: str, name: str = "test") -> Path:
        if (RECIPES / "patches").exists() and not (tmp_path / "patches").exists():
            shutil.copytree(RECIPES / "patches", tmp_path / "patches")
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run `stackbuild ARGS` in-process: (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
