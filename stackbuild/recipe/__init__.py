"""Recipes: YAML files checked by a schema and expanded into Variants."""

from stackbuild.recipe.loader import Recipe, load_recipe
from stackbuild.recipe.matrix import Source, Variant, expand_matrix, select_variant

__all__ = ["Recipe", "Source", "Variant", "expand_matrix", "load_recipe", "select_variant"]
