"""Expand a recipe's matrix into Variants: layered settings plus where each value came from."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stackbuild.errors import RecipeError
from stackbuild.recipe.loader import Layer, Recipe, describe_validation_error
from stackbuild.recipe.schema import Settings, StackInfo
from stackbuild.recipe.yamlsource import KeyPath, format_path


@dataclass(frozen=True)
class Source:
    """Where a resolved value came from: a layer label and a file:line (None for defaults)."""

    label: str
    where: str | None = None

    def __str__(self) -> str:
        return f"{self.label} ({self.where})" if self.where else self.label


DEFAULT_SOURCE = Source("default")


@dataclass(frozen=True)
class Variant:
    """One image to build: a target x framework cell of a recipe, fully resolved."""

    recipe_name: str
    recipe_path: Path
    recipe_digest: str
    stack: StackInfo
    target: str
    framework: str
    settings: Settings
    provenance: dict[KeyPath, Source] = field(compare=False, repr=False)
    image_name: str = ""
    image_tag: str = ""
    module_name: str = ""
    module_version: str = ""
    patch_files: tuple[Path, ...] = ()

    @property
    def name(self) -> str:
        """The stable variant name, e.g. tensorflow-knl."""
        return f"{self.framework}-{self.target}"

    @property
    def image_reference(self) -> str:
        """registry/name:tag as the builder tags it."""
        return f"{self.settings.image.registry}/{self.image_name}:{self.image_tag}"

    @property
    def frameworks(self) -> list[str]:
        """The frameworks the image carries, in a fixed order."""
        present = {"tensorflow": self.settings.tensorflow, "pytorch": self.settings.pytorch}
        return [name for name, cfg in present.items() if cfg is not None]

    @property
    def build_digest(self) -> str:
        """Hash of everything that changes the build: recipe file and patch contents."""
        h = hashlib.sha256(self.recipe_digest.encode())
        h.update(self.name.encode())
        for patch in self.patch_files:
            h.update(patch.read_bytes())
        return h.hexdigest()


def deep_merge(
    base: dict[str, Any],
    layer: dict[str, Any],
    source_for: Callable[[KeyPath], Source],
    prov: dict[KeyPath, Source],
    path: KeyPath = (),
) -> dict[str, Any]:
    """Merge layer into base (mappings merge, lists and scalars replace), recording sources."""
    out = dict(base)
    for key, value in layer.items():
        child = (*path, key)
        if isinstance(value, dict) and value:
            below = out.get(key)
            if not isinstance(below, dict):
                below = {}
                for stale in [p for p in prov if p[: len(child)] == child]:
                    del prov[stale]
            out[key] = deep_merge(below, value, source_for, prov, child)
        else:
            out[key] = value
            for stale in [p for p in prov if p[: len(child)] == child]:
                del prov[stale]
            prov[child] = source_for(child)
    return out


def _all_paths(value: Any, path: KeyPath = ()) -> list[KeyPath]:
    """Every key path in a nested mapping, intermediate ones included."""
    if not isinstance(value, dict):
        return []
    return [q for k, v in value.items() for q in [(*path, k), *_all_paths(v, (*path, k))]]


def _leaf_paths(value: Any, path: KeyPath = ()) -> list[KeyPath]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaf_paths(v, (*path, k))]
    return [path]


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _fill(template: str, values: dict[str, str], recipe: Recipe, key: KeyPath) -> str:
    """Fill {placeholders} in a name template, with a clear error for unknown ones."""
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f}
    unknown = sorted(names - values.keys())
    if unknown:
        raise RecipeError(
            f"{recipe.document.where(key)}: {format_path(key)} uses unknown placeholder "
            f"{{{unknown[0]}}}",
            hint=f"available: {', '.join('{' + v + '}' for v in sorted(values))}",
        )
    return template.format(**values)


def resolve_variant(recipe: Recipe, target: str, framework: str) -> Variant:
    """Merge defaults, target, framework and matching overrides into a checked Variant."""
    doc = recipe.document
    layers: list[Layer] = [
        recipe.layer_for_defaults(),
        recipe.layer_for_target(target),
        recipe.layer_for_framework(framework),
    ]
    for index, override in enumerate(recipe.file.overrides):
        rule = override.match
        if rule.target in (None, target) and rule.framework in (None, framework):
            layers.append(recipe.layer_for_override(index))
    prov: dict[KeyPath, Source] = {}
    merged: dict[str, Any] = {}
    origin: dict[KeyPath, KeyPath] = {}  # resolved key path -> key path in the recipe file
    for layer in layers:
        for path in _all_paths(layer.data):
            origin[path] = (*layer.key_path, *path)

        def source_for(path: KeyPath, layer: Layer = layer) -> Source:
            return Source(layer.label, doc.where((*layer.key_path, *path)))

        merged = deep_merge(merged, layer.data, source_for, prov)
    name = f"{framework}-{target}"
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc: KeyPath = tuple(err["loc"])
        file_loc: KeyPath = loc
        for n in range(len(loc), 0, -1):
            if loc[:n] in origin:
                file_loc = (*origin[loc[:n]], *loc[n:])
                break
        raise describe_validation_error(doc, err, file_loc, context=f"in variant {name}") from None
    for path in _leaf_paths(settings.model_dump()):
        if not any(path[: len(p)] == p for p in prov):
            prov[path] = DEFAULT_SOURCE
    stack = recipe.file.stack
    fw_versions = [
        cfg.version for cfg in (settings.tensorflow, settings.pytorch) if cfg is not None
    ]
    if not fw_versions:
        raise RecipeError(
            f"{doc.where(('frameworks', framework))}: variant {name} has no framework",
            hint=f"set `tensorflow:` or `pytorch:` (with a version) under frameworks.{framework}",
        )
    values = {
        "stack": stack.name,
        "stack_version": stack.version,
        "framework": framework,
        "framework_version": _major_minor(fw_versions[0])
        if len(fw_versions) == 1
        else stack.version,
        "target": target,
        "cuda_major": settings.cuda.version.split(".")[0] if settings.cuda else "none",
    }

    def fill(template: str, key: KeyPath) -> str:
        return _fill(template, values, recipe, origin.get(key, key))

    patches = []
    for index, patch in enumerate(settings.horovod.patches):
        file = (recipe.path.parent / patch.path).resolve()
        if not file.is_file():
            key = origin.get(("horovod", "patches"), ("horovod", "patches"))
            raise RecipeError(
                f"{doc.where((*key, index))}: patch {patch.path!r} not found (looked for {file})",
                hint="patch paths are relative to the recipe file",
            )
        patches.append(file)
    return Variant(
        recipe_name=stack.name,
        recipe_path=recipe.path,
        recipe_digest=recipe.digest,
        stack=stack,
        target=target,
        framework=framework,
        settings=settings,
        provenance=prov,
        image_name=fill(settings.image.name, ("image", "name")),
        image_tag=fill(settings.image.tag, ("image", "tag")),
        module_name=fill(settings.modules.name, ("modules", "name")),
        module_version=fill(settings.modules.version, ("modules", "version")),
        patch_files=tuple(patches),
    )


def expand_matrix(recipe: Recipe) -> list[Variant]:
    """Every variant of the recipe, in matrix order, minus exclusions."""
    variants = []
    for target in recipe.file.matrix.targets:
        for framework in recipe.file.matrix.frameworks:
            excluded = any(
                rule.target in (None, target) and rule.framework in (None, framework)
                for rule in recipe.file.matrix.exclude
            )
            if not excluded:
                variants.append(resolve_variant(recipe, target, framework))
    return variants


def select_variant(variants: list[Variant], name: str) -> Variant:
    """The variant called `name`, or an error listing the valid names."""
    for variant in variants:
        if variant.name == name:
            return variant
    valid = ", ".join(v.name for v in variants)
    raise RecipeError(f"unknown variant {name!r}", hint=f"valid variants: {valid}")
