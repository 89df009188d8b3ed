"""The click commands of the engine stage, run in-process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from stackbuild.build.context import BuildSpec
from stackbuild.build.images import image_exists

RunCli = Callable[..., tuple[int, str, str]]


def test_build_of_a_folder_without_a_context_says_to_render(
    run_cli: RunCli, tmp_path: Path
) -> None:
    code, _out, err = run_cli("build", tmp_path)
    assert code == 2 and "stackbuild render" in err


def test_export_refuses_to_overwrite(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "x.sqsh").write_text("keep")
    code, _out, err = run_cli("export", "any:tag", "--to", "squashfs", "-o", tmp_path / "x.sqsh")
    assert code == 2 and "--force" in err


@pytest.mark.engine
def test_build_command_tags_and_writes_manifest(
    run_cli: RunCli, context_factory: Callable[..., BuildSpec], tmp_path: Path
) -> None:
    spec = context_factory("RUN echo cli > /cli\n", tags=["cli-ok"])
    code, out, err = run_cli("build", spec.context_dir, "--out", tmp_path / "out")
    assert code == 0, err
    assert "built " in out and "STEP 2/" in err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["refs"] == spec.image_refs
    assert image_exists(spec.image_refs[0])
    assert list((tmp_path / "out" / "logs").glob("build-*.log"))


@pytest.mark.engine
def test_build_command_failure_shows_step_tail_and_log(
    run_cli: RunCli, context_factory: Callable[..., BuildSpec], tmp_path: Path
) -> None:
    spec = context_factory("RUN echo broken-step-output && false\n", tags=["cli-fail"])
    code, _out, err = run_cli("build", spec.context_dir, "--out", tmp_path / "out")
    assert code == 1
    assert "failed at STEP 2/" in err and "RUN echo broken-step-output && false" in err
    assert "broken-step-output" in err.split("last lines of the build log")[1]
    assert "full log: " + str(tmp_path / "out" / "logs") in err
    assert not image_exists(spec.image_refs[0])
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.engine
def test_base_command_reuses_the_local_image(run_cli: RunCli, base_image: str) -> None:
    code, out, err = run_cli("base", "--suite", "bookworm")
    assert code == 0, err
    assert base_image in out and "local storage" in out


def test_build_of_a_context_refuses_recipe_options(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "variant.json").write_text("{}")
    code, _out, err = run_cli("build", tmp_path, "--variant", "pytorch-cpu")
    assert code == 2 and "apply to recipes only" in err


def test_build_of_an_unknown_variant_lists_the_known_ones(run_cli: RunCli) -> None:
    code, _out, err = run_cli("build", "cpu", "--variant", "pytorch-gpu")
    assert code == 2 and "pytorch-cpu" in err


@pytest.mark.engine
def test_build_from_a_recipe_renders_and_builds_the_chosen_variant(
    run_cli: RunCli,
    write_recipe: Callable[..., Path],
    cpu_recipe_text: str,
    base_image: str,
    test_repository: str,
    tmp_path: Path,
) -> None:
    # A site template replaces the Containerfile with a tiny one: recipe -> render -> context
    # -> engine -> manifest is the real path, without compiling Horovod for minutes.
    site = tmp_path / "site"
    site.mkdir()
    (site / "Containerfile.j2").write_text(
        "FROM {{ base_image|q }}\nRUN echo {{ variant_name|q }} > /variant\n"
    )
    registry, name = test_repository.split("/", 1)
    recipe = write_recipe(
        cpu_recipe_text.replace(
            "defaults:\n", f"defaults:\n  image: {{registry: {registry}, name: {name}}}\n", 1
        )
    )
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "build", recipe, "--variant", "pytorch-cpu", "--output", out, "--templates", site
    )
    assert code == 0, err
    assert "rendered pytorch-cpu" in err and "built " in stdout
    assert not (out / "tensorflow-cpu").exists()
    manifest = json.loads((out / "pytorch-cpu" / "manifest.json").read_text())
    assert manifest["variant"] == "pytorch-cpu"
    assert manifest["refs"] == [f"{test_repository}:2.13-cpu"]
    assert image_exists(manifest["refs"][0])
