"""Shared fixtures: shipped recipes, recipe files written by a test, running the CLI, and the
session's builds of the shipped CPU stack (engine, Slurm and kernel tests share them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
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


@pytest.fixture(scope="session")
def base_image() -> str:
    """The bookworm minbase image (reused, imported from the cache, or debootstrapped)."""
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (scripts/setup-host.sh)")
    from stackbuild.build.base import ensure_base_image

    return ensure_base_image().ref


@pytest.fixture(scope="session")
def cpu_stack_out(tmp_path_factory: pytest.TempPathFactory, base_image: str) -> Path:
    """Where this session builds the shipped CPU stack (recipes/cpu.yaml), one folder a variant."""
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def cpu_stack_build(cpu_stack_out: Path) -> Callable[[str], tuple[Path, dict[str, object]]]:
    """build(variant) -> (variant folder, manifest): `stackbuild build cpu --variant V`, once
    per variant and session, shared by every test module that runs the CPU images."""
    done: dict[str, tuple[Path, dict[str, object]]] = {}

    def build(variant: str) -> tuple[Path, dict[str, object]]:
        if variant not in done:
            stackbuild = str(Path(sys.executable).with_name("stackbuild"))
            cmd = [stackbuild, "build", "cpu", "--variant", variant, "--output", str(cpu_stack_out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
            assert proc.returncode == 0, proc.stderr[-4000:]
            folder = cpu_stack_out / variant
            done[variant] = (folder, json.loads((folder / "manifest.json").read_text()))
        return done[variant]

    return build


#: A test phase at least this long is reported as it ends, so a run stopped by CI's time
#: limit still shows where the time went (--durations prints only at the end).
SLOW_PHASE_S = 30.0
_STARTED = time.monotonic()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.duration < SLOW_PHASE_S:
        return
    reporter = _CONFIG.pluginmanager.get_plugin("terminalreporter") if _CONFIG else None
    if reporter is not None:
        elapsed = (time.monotonic() - _STARTED) / 60
        reporter.write_line(
            f"[{elapsed:5.1f} min] {report.duration:6.0f} s {report.when:8} {report.nodeid}"
        )


_CONFIG: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _CONFIG
    _CONFIG = config
