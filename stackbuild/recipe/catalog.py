"""Find recipes: shipped ones in recipes/, or any YAML path a user passes."""

from __future__ import annotations

import os
from pathlib import Path

from stackbuild import PROJECT_ROOT
from stackbuild.errors import RecipeError


def recipes_dir() -> Path:
    """$STACKBUILD_RECIPES, else the project's recipes/ directory."""
    return Path(os.environ.get("STACKBUILD_RECIPES", PROJECT_ROOT / "recipes"))


def shipped_recipes() -> list[Path]:
    """Every recipe file in the recipes directory, sorted by name."""
    return sorted(recipes_dir().glob("*.yaml"))


def find_recipe(name_or_path: str) -> Path:
    """A recipe by file path, or by name (file stem) in the recipes directory."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        return path
    candidate = recipes_dir() / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(p.stem for p in shipped_recipes()) or "(none)"
    raise RecipeError(
        f"no recipe named {name_or_path!r} in {recipes_dir()}",
        hint=f"known recipes: {known}; or pass a path to a .yaml file",
    )
