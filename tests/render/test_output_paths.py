"""The writers' last guard: no rendered file lands outside its variant's directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stackbuild.errors import TemplateError
from stackbuild.recipe import expand_matrix, load_recipe
from stackbuild.render.renderer import render_variant
from stackbuild.render.writers import contained_path

BASE = Path(__file__).parents[1] / "recipe" / "bad" / "base.yaml"


@pytest.mark.parametrize(
    "path", ["../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/./b", "a\\..\\b", "a\nb", ""]
)
def test_paths_that_are_not_plain_and_relative_are_refused(path: str):
    with pytest.raises(TemplateError, match="refusing to write it"):
        contained_path(path, "modules")


@pytest.mark.parametrize("path", ["Containerfile", "wrappers/pytorch/2.13-cpu/bin/python"])
def test_plain_relative_paths_pass(path: str):
    assert contained_path(path, "modules") == path


@pytest.mark.parametrize(
    ("field", "value"),
    [("module_name", "../../../escaped"), ("module_version", "../../x"), ("image_tag", "ok")],
)
def test_a_variant_whose_names_escape_writes_nothing(tmp_path: Path, field: str, value: str):
    """Past the schema (a Variant built in code), the writer still refuses to climb out."""
    variant = dataclasses.replace(expand_matrix(load_recipe(BASE))[0], **{field: value})
    out = tmp_path / "out"
    if field == "image_tag":  # a harmless change renders as usual
        assert render_variant(variant, out).is_dir()
        return
    with pytest.raises(TemplateError, match="not a plain relative path"):
        render_variant(variant, out)
    assert list(tmp_path.rglob("*")) == []  # nothing written, inside or outside
