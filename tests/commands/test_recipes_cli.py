"""The CLI: list, show, render, lint; user errors exit 2 with a message and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT


def test_list_shows_every_shipped_variant(run_cli):
    code, out, _ = run_cli("list", "--json")
    assert code == 0
    rows = {r["variant"]: r for r in json.loads(out)}
    assert set(rows) == {
        "tensorflow-cpu",
        "pytorch-cpu",
        "tensorflow-gpu",
        "pytorch-gpu",
        "tensorflow-knl",
        "pytorch-knl",
    }
    assert rows["pytorch-gpu"]["image"] == "localhost/stackbuild/pytorch:2.13-gpu-cu13"


def test_show_reports_value_sources(run_cli):
    code, out, _ = run_cli("show", "tensorflow-knl", "--json")
    assert code == 0
    settings = {row["key"]: row for row in json.loads(out)["settings"]}
    assert settings["platform.march"]["value"] == "knl"
    assert settings["platform.march"]["source"].startswith("target knl (")
    assert settings["mpi.flavor"]["source"].startswith("target knl")
    assert settings["horovod.build_env"]["source"] == "default"


def test_show_needs_recipe_when_a_variant_name_is_ambiguous(run_cli, cpu_recipe_text, tmp_path):
    code, _, err = run_cli("show", "no-such-variant")
    assert code == 2
    assert "unknown variant 'no-such-variant'" in err
    assert "tensorflow-knl" in err


def test_render_writes_only_the_requested_formats(run_cli, tmp_path: Path):
    code, out, _ = run_cli(
        "render", "cpu", "--variant", "pytorch-cpu", "--only", "jobs,modules", "-o", tmp_path
    )
    assert code == 0, out
    produced = {p.relative_to(tmp_path).parts[1] for p in tmp_path.rglob("*") if p.is_file()}
    assert produced == {"jobs", "modulefiles", "wrappers", ".stackbuild-render", "render.json"}


def test_render_refuses_a_build_folder_and_loses_nothing(run_cli, tmp_path: Path):
    """Rendering over a build would delete its manifest, validation record and pin, and its
    user files would name the movable tag again: refused, with the ways out; --force goes."""
    args = ("render", "cpu", "--variant", "pytorch-cpu", "--only", "modules", "-o", tmp_path)
    assert run_cli(*args)[0] == 0
    folder = tmp_path / "pytorch-cpu"
    (folder / "manifest.json").write_text("{}")
    (folder / "pin.json").write_text("{}")
    code, _, err = run_cli(*args)
    assert code == 2
    message = " ".join(err.split())
    assert f"{folder} holds a build (manifest.json, pin.json)" in message
    assert f"--pin {folder}" in message and "--force" in message
    assert (folder / "manifest.json").exists() and (folder / "pin.json").exists()
    assert run_cli(*args, "--force")[0] == 0
    assert not (folder / "manifest.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("render", "cpu", "--variant", "tensorflow-gpu", "-o", "OUT"), "valid variants:"),
        (("render", "nosuch", "-o", "OUT"), "no recipe named 'nosuch'"),
        (("render", "cpu", "--templates", "MISSING", "-o", "OUT"), "does not exist"),
        (("render", "cpu", "--only", "docker", "-o", "OUT"), "unknown output format 'docker'"),
    ],
)
def test_user_errors_exit_2_with_a_message(run_cli, tmp_path: Path, args, message):
    args = tuple(str(tmp_path / a) if a in ("OUT", "MISSING") else a for a in args)
    code, _, err = run_cli(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_broken_recipe_from_the_command_line_is_a_clean_error(
    write_recipe, cpu_recipe_text, tmp_path: Path
):
    path = write_recipe(cpu_recipe_text.replace("  targets: [cpu]\n", "  targetz: [cpu]\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "stackbuild.cli", "render", str(path), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
    )
    assert proc.returncode == 2
    assert "unknown key 'matrix.targetz'" in proc.stderr
    assert "did you mean 'targets'?" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.tools
def test_lint_command_passes_on_shipped_recipes(run_cli):
    code, out, err = run_cli("lint")
    assert code == 0, out + err
    assert "no problems" in out
