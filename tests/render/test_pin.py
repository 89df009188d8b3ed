"""User files name the validated image: a digest where the runtime runs one, an immutable
tag (and an ID check at start) elsewhere, the recipe's tag before anything was validated."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.commands.build import keep_pin
from stackbuild.recipe import expand_matrix, load_recipe, select_variant
from stackbuild.recipe.matrix import Variant, with_runtime
from stackbuild.render.pin import ImagePin, immutable_tag, read_pin, write_pin
from stackbuild.render.renderer import render_files, render_variant, rerender_user_files

IMAGE_ID = "sha256:" + "ab" * 32
REGISTRY = "registry.example.org/stackbuild/pytorch"


def variant(name: str = "pytorch-cpu", recipe: str = "cpu") -> Variant:
    return select_variant(expand_matrix(load_recipe(PROJECT_ROOT / f"recipes/{recipe}.yaml")), name)


def local_pin(v: Variant) -> ImagePin:
    tag = immutable_tag(v.image_tag, IMAGE_ID)
    return ImagePin(v.build_digest, IMAGE_ID, f"{v.image_reference.rsplit(':', 1)[0]}:{tag}")


def files(v: Variant, formats: list[str]) -> dict[str, str]:
    return {f.path: f.content.decode() for f in render_files(v, formats)}


def test_before_validation_user_files_name_the_tag_and_say_so() -> None:
    rendered = files(variant(), ["modules"])
    wrapper = rendered["wrappers/pytorch/2.13-cpu/bin/python"]
    assert "default_image=localhost/stackbuild/pytorch:2.13-cpu\n" in wrapper
    assert "not the validated image" not in wrapper  # nothing to check against yet
    assert "Validated: not yet" in rendered["modulefiles/lmod/pytorch/2.13-cpu.lua"]


def test_a_local_pin_names_the_immutable_tag_and_checks_the_image_id() -> None:
    v = variant()
    pin = local_pin(v)
    rendered = files(dataclasses.replace(v, pin=pin), ["modules", "jobs"])
    wrapper = rendered["wrappers/pytorch/2.13-cpu/bin/python"]
    assert f"default_image={pin.reference}\n" in wrapper
    assert pin.reference.endswith(":2.13-cpu-abababababab")
    assert f"!= {'ab' * 32} ]" in wrapper  # the ID check at start
    assert f"Validated: image {IMAGE_ID}" in rendered["modulefiles/lmod/pytorch/2.13-cpu.lua"]
    assert f"image={pin.reference}\n" in rendered["jobs/validate-podman.sbatch"]


def test_a_published_pin_names_the_digest_where_the_runtime_can_run_one() -> None:
    v = variant("pytorch-gpu", "gpu")
    pin = ImagePin(
        v.build_digest,
        IMAGE_ID,
        f"{REGISTRY}:2.13-gpu-cu13-abababababab",
        f"{REGISTRY}@sha256:{'cd' * 32}",
    )
    pinned = dataclasses.replace(v, pin=pin)
    jobs = files(pinned, ["jobs"])
    assert f"image={pin.digest_reference}\n" in jobs["jobs/validate-podman.sbatch"]
    assert "not the validated image" not in jobs["jobs/validate-podman.sbatch"]  # a digest
    # Shifter pulls by tag: the immutable one, from the registry (never localhost/).
    shifter = jobs["jobs/validate-shifter.sbatch"]
    assert f"#SBATCH --image=docker:{pin.reference}\n" in shifter
    # Apptainer's SIF file is named after the immutable tag.
    assert "pytorch_2.13-gpu-cu13-abababababab.sif" in jobs["jobs/validate-apptainer.sbatch"]
    modules = files(with_runtime(pinned, "shifter"), ["modules"])
    assert (
        f"default_image=docker:{pin.reference}\n" in modules["wrappers/pytorch/2.13-gpu/bin/python"]
    )


def test_render_pin_refuses_a_folder_validated_for_another_recipe_state(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    v = variant()
    folder = tmp_path / "validated"
    folder.mkdir()
    write_pin(folder, dataclasses.replace(local_pin(v), recipe_hash="0" * 64))
    code, _out, err = run_cli(
        "render",
        "recipes/cpu.yaml",
        "-v",
        "pytorch-cpu",
        "-o",
        str(tmp_path / "r"),
        "--pin",
        str(folder),
    )
    assert code == 2 and "another recipe state" in err
    write_pin(folder, local_pin(v))
    code, _out, err = run_cli(
        "render",
        "recipes/cpu.yaml",
        "-v",
        "pytorch-cpu",
        "-o",
        str(tmp_path / "r"),
        "--pin",
        str(folder),
        "--only",
        "modules",
    )
    assert code == 0, err
    wrapper = tmp_path / "r/pytorch-cpu/wrappers/pytorch/2.13-cpu/bin/python"
    assert f"default_image={local_pin(v).reference}" in wrapper.read_text()


def test_a_rebuild_of_a_changed_recipe_keeps_user_files_on_the_validated_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v = variant()
    folder = render_variant(v, tmp_path)
    old = dataclasses.replace(local_pin(v), recipe_hash="1" * 64)  # validated before an edit
    write_pin(folder, old)
    kept = keep_pin(v, folder)
    assert kept.pin == old
    assert "keep running" in capsys.readouterr().err
    render_variant(kept, tmp_path, keep=("pin.json",))
    wrapper = folder / "wrappers/pytorch/2.13-cpu/bin/python"
    assert f"default_image={old.reference}" in wrapper.read_text()
    assert read_pin(folder) == old


def test_validate_and_publish_re_render_the_user_files_in_the_build_folder(
    tmp_path: Path,
) -> None:
    v = variant()
    folder = render_variant(v, tmp_path)
    wrapper = folder / "wrappers/pytorch/2.13-cpu/bin/python"
    assert "default_image=localhost/stackbuild/pytorch:2.13-cpu\n" in wrapper.read_text()
    pin = local_pin(v)
    message = rerender_user_files(folder, pin)
    assert "now name" in message, message
    assert f"default_image={pin.reference}\n" in wrapper.read_text()
    assert (folder / "Containerfile").is_file()  # only the user files were rewritten
    stale = dataclasses.replace(pin, recipe_hash="2" * 64)
    assert "changed since the validated build" in rerender_user_files(folder, stale)


def test_the_wrapper_stops_when_the_tag_names_another_image(tmp_path: Path) -> None:
    """Real podman: the pinned tag is made to name an image other than the validated one."""
    if subprocess.run(["podman", "--version"], capture_output=True).returncode != 0:
        pytest.skip("podman not installed (scripts/setup-host.sh)")
    from stackbuild.build.base import ensure_base_image

    base = ensure_base_image().ref
    ref = "localhost/pin-test/image:moved"
    subprocess.run(["podman", "tag", base, ref], check=True)
    try:
        v = variant()
        pin = ImagePin(v.build_digest, IMAGE_ID, ref)
        folder = render_variant(dataclasses.replace(v, pin=pin), tmp_path, ["modules"])
        wrapper = folder / "wrappers/pytorch/2.13-cpu/bin/python"
        result = subprocess.run([wrapper, "-c", "1"], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 3, result.stderr
        assert f"{ref} is " in result.stderr and "not the validated image" in result.stderr
    finally:
        subprocess.run(["podman", "rmi", ref], capture_output=True, check=False)
