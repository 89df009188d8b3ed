"""Matrix expansion: layering order, provenance, names and tags."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackbuild import PROJECT_ROOT
from stackbuild.errors import RecipeError
from stackbuild.recipe import expand_matrix, load_recipe, select_variant

RECIPES = PROJECT_ROOT / "recipes"


def variants(name: str):
    return expand_matrix(load_recipe(RECIPES / f"{name}.yaml"))


def test_stable_names_and_tag_scheme():
    got = {v.name: (v.image_name, v.image_tag) for r in ("cpu", "gpu", "knl") for v in variants(r)}
    assert got["tensorflow-knl"] == ("stackbuild/tensorflow", "2.21-knl")
    assert got["pytorch-gpu"] == ("stackbuild/pytorch", "2.13-gpu-cu13")
    assert got["tensorflow-gpu"] == ("stackbuild/tensorflow", "2.21-gpu-cu12")
    assert got["tensorflow-cpu"] == ("stackbuild/tensorflow", "2.21-cpu")


def test_layers_apply_in_order_and_record_their_source():
    tf_knl = select_variant(variants("knl"), "tensorflow-knl")
    assert tf_knl.settings.platform.march == "knl"
    assert tf_knl.settings.threads.omp_num_threads == 66
    assert str(tf_knl.provenance[("platform", "march")]).startswith("target knl (")
    line = (RECIPES / "knl.yaml").read_text().splitlines().index("      march: knl") + 1
    assert tf_knl.provenance[("platform", "march")].where.endswith(f"knl.yaml:{line}")
    assert str(tf_knl.provenance[("mpi", "build_packages")]) == "default"
    assert str(tf_knl.provenance[("modules", "runtime")]).startswith("recipe defaults")


def test_overrides_beat_targets_and_frameworks():
    pt = select_variant(variants("gpu"), "pytorch-gpu")
    assert pt.settings.modules.conflicts == ["tensorflow"]
    assert str(pt.provenance[("modules", "conflicts")]).startswith("override #2")
    assert pt.settings.modules.commands[-1] == "torchrun"
    assert str(pt.provenance[("modules", "commands")]).startswith("framework pytorch")


def test_frameworks_of_a_variant():
    assert select_variant(variants("cpu"), "pytorch-cpu").frameworks == ["pytorch"]
    assert select_variant(variants("cpu"), "tensorflow-cpu").frameworks == ["tensorflow"]


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(RecipeError) as info:
        select_variant(variants("cpu"), "tensorflow-gpu")
    assert "unknown variant 'tensorflow-gpu'" in str(info.value)
    assert "tensorflow-cpu, pytorch-cpu" in str(info.value)


def test_exclusions_remove_cells(cpu_recipe_text, write_recipe):
    text = cpu_recipe_text.replace(
        "  frameworks: [tensorflow, pytorch]\n",
        "  frameworks: [tensorflow, pytorch]\n  exclude: [{framework: pytorch}]\n",
    )
    assert [v.name for v in expand_matrix(load_recipe(write_recipe(text)))] == ["tensorflow-cpu"]


def test_build_digest_changes_with_the_recipe(cpu_recipe_text, write_recipe, tmp_path: Path):
    first = expand_matrix(load_recipe(write_recipe(cpu_recipe_text, "a")))[0]
    changed = cpu_recipe_text.replace('["h5py==3.16.0"]', '["h5py==3.15.1"]')
    second = expand_matrix(load_recipe(write_recipe(changed, "b")))[0]
    assert first.build_digest != second.build_digest
