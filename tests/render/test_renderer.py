"""Rendering: every shipped variant renders, deterministically, and never clobbers by accident."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.errors import StackbuildError, TemplateError
from stackbuild.recipe import expand_matrix, load_recipe
from stackbuild.render.renderer import render_files, render_variant
from stackbuild.render.writers import JOB_RUNTIMES, WRITERS

SHIPPED = sorted((PROJECT_ROOT / "recipes").glob("*.yaml"))


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode & 0o777)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_variant_renders_every_format(recipe: Path, tmp_path: Path):
    for variant in expand_matrix(load_recipe(recipe)):
        out = render_variant(variant, tmp_path)
        names = {p.name for p in out.rglob("*")}
        assert {"Containerfile", "apptainer.def", "variant.json"} <= names
        assert (
            out / "modulefiles/lmod" / variant.module_name / f"{variant.module_version}.lua"
        ).is_file()
        assert (out / "modulefiles/tcl" / variant.module_name / variant.module_version).is_file()
        for command in variant.settings.modules.commands:
            wrapper = (
                out / "wrappers" / variant.module_name / variant.module_version / "bin" / command
            )
            assert os.access(wrapper, os.X_OK)
        # One job script per runtime of the table.
        assert len(list((out / "jobs").glob("*.sbatch"))) == len(JOB_RUNTIMES)


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: p.stem)
def test_rendering_twice_is_byte_identical(recipe: Path, tmp_path: Path):
    for variant in expand_matrix(load_recipe(recipe)):
        first = render_variant(variant, tmp_path / "one")
        second = render_variant(variant, tmp_path / "two")
        assert tree(first) == tree(second)
        again = render_variant(variant, tmp_path / "one")  # re-render in place
        assert tree(again) == tree(second)


def test_only_selects_formats(tmp_path: Path):
    variant = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))[0]
    paths = {f.path for f in render_files(variant, ["modules"])}
    assert paths and all(p.startswith(("modulefiles/", "wrappers/")) for p in paths)
    with pytest.raises(TemplateError, match="unknown output format 'dockerfile'"):
        render_files(variant, ["dockerfile"])
    assert set(WRITERS) == {"containerfile", "apptainer", "modules", "kernels", "jobs"}


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path: Path):
    variant = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))[0]
    precious = tmp_path / variant.name / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("mine")
    with pytest.raises(StackbuildError, match="was not written by `stackbuild render`"):
        render_variant(variant, tmp_path)
    assert precious.read_text() == "mine"
    render_variant(variant, tmp_path, force=True)
    assert not precious.exists()


def test_rendering_again_carries_over_only_the_kept_build_outputs(tmp_path: Path):
    variant = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))[0]
    folder = render_variant(variant, tmp_path)
    (folder / "manifest.json").write_text("{}")
    (folder / "logs").mkdir()
    (folder / "logs" / "build.log").write_text("log")
    (folder / "Containerfile").write_text("edited by hand")
    render_variant(variant, tmp_path, keep=("manifest.json", "logs"))
    assert (folder / "manifest.json").read_text() == "{}"
    assert (folder / "logs" / "build.log").read_text() == "log"
    assert (folder / "Containerfile").read_text() != "edited by hand"
    render_variant(variant, tmp_path)
    assert not (folder / "manifest.json").exists()


def test_a_target_written_only_in_yaml_renders(cpu_recipe_text, write_recipe, tmp_path: Path):
    """An aarch64 GPU node, defined in this test's YAML alone, renders without code changes."""
    text = cpu_recipe_text.replace(
        "frameworks:\n  tensorflow:",
        """  gh200:
    platform: {arch: aarch64, march: armv9-a, description: Grace Hopper}
    cuda: {version: "12.8", compute_capabilities: ["9.0"], cudnn: "9", nccl: "2.26"}
    pip: {constraints: ["nvidia-nccl-cu12==2.26.5", "nvidia-cudnn-cu12==9.8.0.87"]}
    mpi: {flavor: openmpi, build_packages: [libopenmpi-dev], runtime_packages: [openmpi-bin]}
    horovod: {tensor_operations: [nccl, mpi]}
    base: {image: docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04, bootstrap: null}
    image: {tag: "{framework_version}-gh200-cu{cuda_major}"}
    modules: {runtime: apptainer}

frameworks:
  tensorflow:""",
    ).replace("  targets: [cpu]", "  targets: [cpu, gh200]")
    variants = {v.name: v for v in expand_matrix(load_recipe(write_recipe(text)))}
    gh = variants["pytorch-gh200"]
    assert gh.image_tag == "2.13-gh200-cu12"
    out = render_variant(gh, tmp_path)
    containerfile = (out / "Containerfile").read_text()
    horovod = (out / "files/horovod/build-horovod.sh").read_text()
    assert "FROM docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS runtime" in containerfile
    assert "libopenmpi-dev" in containerfile
    assert "export HOROVOD_GPU_OPERATIONS=NCCL" in horovod
    assert "export HOROVOD_BUILD_CUDA_CC_LIST=90" in horovod
    assert "-march=armv9-a" in horovod
    python = next((out / "wrappers").rglob("python"))
    assert "apptainer exec --nv" in python.read_text()


def test_missing_template_directory_is_reported(tmp_path: Path):
    variant = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))[0]
    with pytest.raises(TemplateError, match=r"template directory .*nowhere does not exist"):
        render_files(variant, site_templates=tmp_path / "nowhere")


def test_undefined_template_variable_names_template_and_variable(tmp_path: Path):
    site = tmp_path / "site"
    (site / "modules").mkdir(parents=True)
    (site / "modules/module.lua.j2").write_text("whatis({{ no_such_value|lua }})\n")
    variant = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))[0]
    with pytest.raises(TemplateError) as info:
        render_files(variant, ["modules"], site_templates=site)
    assert "modules/module.lua.j2" in str(info.value)
    assert "'no_such_value' is undefined" in str(info.value)


def test_site_template_overrides_one_block(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "Containerfile.j2").write_text(
        '{% extends "builtin/Containerfile.j2" %}\n'
        "{% block runtime_extra %}RUN echo {{ ('site ' ~ variant_name)|q }}\n{% endblock %}\n"
    )
    variant = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))[0]
    files = {f.path: f.content.decode() for f in render_files(variant, ["containerfile"], site)}
    assert "RUN echo 'site tensorflow-cpu'\n" in files["Containerfile"]
    assert "AS builder" in files["Containerfile"]  # the rest is still the built-in template


def test_a_template_cannot_print_an_unquoted_value(tmp_path: Path):
    site = tmp_path / "site"
    (site / "wrappers").mkdir(parents=True)
    (site / "wrappers/wrapper.sh.j2").write_text("#!/bin/sh\nexec {{ command }}\n")
    variant = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))[0]
    with pytest.raises(TemplateError, match="unquoted value 'python'"):
        render_files(variant, ["modules"], site_templates=site)


def test_undefined_variable_in_an_inherited_template_names_that_template(tmp_path: Path):
    site = tmp_path / "site"
    (site / "jobs").mkdir(parents=True)
    (site / "jobs/_header.sbatch.j2").write_text(
        "#!/bin/bash\n{{ nope|q }}\n{% block body %}{% endblock %}\n"
    )
    variant = expand_matrix(load_recipe(PROJECT_ROOT / "recipes/cpu.yaml"))[0]
    with pytest.raises(TemplateError) as info:
        render_files(variant, ["jobs"], site_templates=site)
    assert "_header.sbatch.j2" in str(info.value)
    assert "'nope' is undefined" in str(info.value)
