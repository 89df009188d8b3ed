"""What spython's round trip cannot see in apptainer.def (Apptainer is not installable here):
the %runscript runs the command it is given, the bootstrap archive is one stackbuild makes,
and the revision label is a build-time variable the builder sets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.build.context import BuildSpec
from stackbuild.build.engines import ApptainerBuilder
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from stackbuild.render.renderer import render_files

SHIPPED = sorted((PROJECT_ROOT / "recipes").glob("*.yaml"))


def definition(recipe: str = "cpu", name: str = "pytorch-cpu") -> str:
    variant = select_variant(
        expand_matrix(load_recipe(PROJECT_ROOT / f"recipes/{recipe}.yaml")), name
    )
    return next(f for f in render_files(variant, ["apptainer"])).content.decode()


def section(text: str, name: str) -> str:
    match = re.search(rf"^%{name}\n(.*?)(?=^%|^Bootstrap:|\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no %{name} section"
    return match.group(1)


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.stem)
def test_one_runscript_and_it_runs_the_command_it_is_given(recipe: Path, tmp_path: Path) -> None:
    for v in expand_matrix(load_recipe(recipe)):
        text = next(f for f in render_files(v, ["apptainer"])).content.decode()
        assert text.count("%runscript") == 1 and "%startscript" not in text
        body = section(text, "runscript")
        # Apptainer runs %runscript with /bin/sh and the arguments of `apptainer run IMG ...`.
        ran = subprocess.run(
            ["sh", "-c", body, "runscript", "printf", "%s|", "two words", "x"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert ran.stdout == "two words|x|"
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "python3").write_text('#!/bin/sh\necho "python3 $#"\n')
        (bindir / "python3").chmod(0o755)
        default = subprocess.run(
            ["sh", "-c", body, "runscript"],
            capture_output=True,
            text=True,
            env={"PATH": f"{bindir}:/usr/bin:/bin"},
            check=True,
        )
        assert default.stdout == "python3 0\n"  # the image's CMD when given nothing


def test_the_bootstrap_archive_is_what_stackbuild_export_writes() -> None:
    text = definition()
    source = re.findall(r"^From: (.+)$", text, re.MULTILINE)
    assert set(source) == {"localhost_stackbuild_base_bookworm-minbase.tar"}
    assert (
        "stackbuild export localhost/stackbuild/base:bookworm-minbase --to docker-archive "
        "--output localhost_stackbuild_base_bookworm-minbase.tar" in text
    )


def test_the_revision_label_is_a_build_argument_the_builder_passes(tmp_path: Path) -> None:
    text = definition()
    runtime = text[text.index("Stage: runtime") :]
    assert "org.opencontainers.image.revision={{ SOURCE_REVISION }}" in section(runtime, "labels")
    assert section(runtime, "arguments").strip() == "SOURCE_REVISION=unknown"
    assert "${SOURCE_REVISION}" not in text  # Apptainer would print that literally
    spec = BuildSpec(
        context_dir=tmp_path,
        recipe="cpu",
        recipe_hash="0" * 64,
        variant="pytorch-cpu",
        repository="localhost/x",
        tags=("1",),
        base_image="localhost/stackbuild/base:bookworm-minbase",
        bootstrap=None,
        build_args={"SOURCE_REVISION": "0123abc"},
    )
    argv = ApptainerBuilder().build_argv(spec, tmp_path / "iid")
    assert argv[argv.index("--build-arg") + 1] == "SOURCE_REVISION=0123abc"
