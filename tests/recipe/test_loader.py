"""Recipe loading: every user mistake gets an error naming file, line, key and the fix."""

from __future__ import annotations

import pytest

from stackbuild.errors import RecipeError
from stackbuild.recipe import expand_matrix, load_recipe


def test_shipped_recipes_load_and_expand(cpu_recipe_text, write_recipe):
    recipe = load_recipe(write_recipe(cpu_recipe_text))
    names = [v.name for v in expand_matrix(recipe)]
    assert names == ["tensorflow-cpu", "pytorch-cpu"]


def test_unknown_key_names_file_line_path_and_closest_key(cpu_recipe_text, write_recipe):
    text = cpu_recipe_text.replace("      march: x86-64-v3", "      mrach: x86-64-v3")
    path = write_recipe(text)
    line = text.splitlines().index("      mrach: x86-64-v3") + 1
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert f"test.yaml:{line}" in message
    assert "targets.cpu.platform.mrach" in message
    assert "did you mean 'march'?" in message


def test_unknown_top_level_key_suggests_closest(cpu_recipe_text, write_recipe):
    path = write_recipe(cpu_recipe_text.replace("overrides:", "overides:"))
    with pytest.raises(RecipeError, match=r"(?s)unknown key 'overides'.*did you mean 'overrides'"):
        load_recipe(path)


def test_wrong_type_names_key_and_value(cpu_recipe_text, write_recipe):
    text = cpu_recipe_text.replace("    ranks_per_node: 1", "    ranks_per_node: many")
    path = write_recipe(text)
    line = text.splitlines().index("    ranks_per_node: many") + 1
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert f"test.yaml:{line}" in message
    assert "defaults.jobs.ranks_per_node" in message
    assert "'many'" in message and "integer" in message


def test_missing_required_value_in_stack(cpu_recipe_text, write_recipe):
    path = write_recipe(cpu_recipe_text.replace('  version: "2026.11"\n', "", 1))
    with pytest.raises(RecipeError, match=r"missing required value 'stack.version'"):
        load_recipe(path)


def test_missing_framework_version_is_reported_for_the_variant(cpu_recipe_text, write_recipe):
    path = write_recipe(cpu_recipe_text.replace("      version: 2.13.0\n", ""))
    with pytest.raises(RecipeError) as info:
        expand_matrix(load_recipe(path))
    message = str(info.value)
    assert "missing required value 'frameworks.pytorch.pytorch.version'" in message
    assert "in variant pytorch-cpu" in message


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("      version: 2.21.0", "      version: 2.21.0; rm -rf /", "tensorflow.version"),
        ('["h5py==3.16.0"]', '["h5py==3.16.0 $(curl evil)"]', "pip.extra_packages[0]"),
        ("      package: torch", "      package: torch`id`", "pytorch.package"),
    ],
)
def test_shell_metacharacters_in_versions_and_packages_are_rejected(
    cpu_recipe_text, write_recipe, old, new, key
):
    assert old in cpu_recipe_text
    path = write_recipe(cpu_recipe_text.replace(old, new))
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert key in message
    assert "shell metacharacters" in message


@pytest.mark.parametrize("path", ["../../etc", "/usr/lib", "torch/../../x", "torch/include; id"])
def test_runtime_prune_takes_only_paths_inside_site_packages(cpu_recipe_text, write_recipe, path):
    old = "      runtime_prune:\n        - torch/include\n"
    assert old in cpu_recipe_text
    path_file = write_recipe(
        cpu_recipe_text.replace(old, f"      runtime_prune:\n        - '{path}'\n")
    )
    with pytest.raises(RecipeError) as info:
        load_recipe(path_file)
    assert "pip.runtime_prune[0]" in str(info.value)
    assert "a path inside site-packages" in str(info.value)


def test_duplicate_key_is_an_error(cpu_recipe_text, write_recipe):
    text = cpu_recipe_text.replace("  name: cpu\n", "  name: cpu\n  name: other\n", 1)
    with pytest.raises(RecipeError, match="appears twice"):
        load_recipe(write_recipe(text))


def test_invalid_yaml_names_the_line(write_recipe):
    path = write_recipe("stack:\n  name: [unclosed\n")
    with pytest.raises(RecipeError, match=r"test.yaml:\d+: not valid YAML"):
        load_recipe(path)


def test_matrix_naming_an_undefined_target(cpu_recipe_text, write_recipe):
    path = write_recipe(cpu_recipe_text.replace("  targets: [cpu]", "  targets: [cpus]"))
    with pytest.raises(RecipeError, match=r"(?s)matrix.targets names 'cpus'.*did you mean 'cpu'"):
        load_recipe(path)


def test_missing_patch_file_is_reported(cpu_recipe_text, write_recipe):
    text = cpu_recipe_text.replace(
        "      - path: patches/horovod/0.28.1/0001-torch-cxx17.patch\n",
        "      - path: patches/none.patch\n",
    )
    assert "patches/none.patch" in text
    with pytest.raises(RecipeError, match=r"patch 'patches/none.patch' not found"):
        expand_matrix(load_recipe(write_recipe(text)))


def test_unknown_placeholder_in_tag(cpu_recipe_text, write_recipe):
    text = cpu_recipe_text.replace(
        "  modules:\n    runtime: podman",
        '  image: {tag: "{version}-x"}\n  modules:\n    runtime: podman',
    )
    with pytest.raises(RecipeError, match=r"unknown placeholder \{version\}"):
        expand_matrix(load_recipe(write_recipe(text)))
