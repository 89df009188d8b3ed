"""`stackbuild lint` runs the real linters, and they do catch broken files."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.lint import lint_apptainer, lint_containerfile, lint_lua, lint_shell, lint_tree
from stackbuild.recipe import expand_matrix, load_recipe
from stackbuild.render.renderer import render_variant
from tests.helpers import needs_tool

pytestmark = pytest.mark.tools
SHIPPED = sorted((PROJECT_ROOT / "recipes").glob("*.yaml"))


@needs_tool("shellcheck", "luac5.4")
@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipes_render_lint_clean(recipe: Path, tmp_path: Path):
    for variant in expand_matrix(load_recipe(recipe)):
        render_variant(variant, tmp_path)
    checked, findings = lint_tree(tmp_path)
    assert findings == []
    per_variant = 1 + 1 + 1 + 3 + 2  # Containerfile, .def, .lua, 3 jobs, 2 build scripts
    assert checked >= per_variant * len(list(tmp_path.iterdir()))


def test_hadolint_catches_a_bad_containerfile(tmp_path: Path):
    path = tmp_path / "Containerfile"
    path.write_text("FROM debian:bookworm\nRUN cd /tmp && sudo make install\n")
    findings = lint_containerfile(path)
    assert any(f.tool == "hadolint" and "DL3003" in f.message for f in findings)
    assert any("DL3004" in f.message for f in findings)


def test_parser_catches_a_broken_instruction(tmp_path: Path):
    path = tmp_path / "Containerfile"
    path.write_text("FROM debian:bookworm\nCOPY\n")
    assert any(f.tool in ("dockerfile-parser", "hadolint") for f in lint_containerfile(path))


@needs_tool("shellcheck")
def test_shellcheck_catches_unquoted_expansion(tmp_path: Path):
    path = tmp_path / "wrapper"
    path.write_text('#!/bin/bash\nexec podman run $IMAGE "$@"\n')
    assert any("SC2086" in f.message for f in lint_shell(path))


@needs_tool("luac5.4")
def test_luac_catches_a_syntax_error(tmp_path: Path):
    path = tmp_path / "m.lua"
    path.write_text('setenv("A", "b"\n')
    assert lint_lua(path)


def test_spython_check_catches_a_definition_with_mount_flags(tmp_path: Path):
    path = tmp_path / "x.def"
    path.write_text("Bootstrap: docker\nFrom: debian\nStage: one\n\n%post\n--mount=type=secret x\n")
    assert any("--mount" in f.message for f in lint_apptainer(path))
