"""Expand a recipe's matrix into Variants: layered settings plus where each value came from."""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stackbuild.errors import RecipeError
from stackbuild.recipe.cuda import check_cuda_facts
from stackbuild.recipe.loader import (
    Layer,
    Recipe,
    describe_validation_error,
    matrix_cells,
    rule_matches,
)
from stackbuild.recipe.schema import (
    IMAGE_TAG,
    PATH_SEGMENT,
    REMOTE_NAME,
    Settings,
    StackInfo,
    image_reference_problem,
)
from stackbuild.recipe.yamlsource import KeyPath, format_path

if TYPE_CHECKING:
    from stackbuild.render.pin import ImagePin


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
    #: the validated image that user files name (set from a build folder's pin.json)
    pin: ImagePin | None = None

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
    """Fill {placeholders} in a name template, with a clear error for unknown ones.

    Only bare {name} fields are substituted: no format specs, conversions, attribute or
    index access, which str.format would evaluate.
    """
    where = f"{recipe.document.where(key)}: {format_path(key)} = {template!r}"
    available = f"available: {', '.join('{' + v + '}' for v in sorted(values))}"
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        raise RecipeError(
            f"{where} has an unbalanced {{ or }}",
            hint=f"write placeholders as {{name}}; {available}",
        ) from None
    out = []
    for literal, field_name, spec, conversion in fields:
        out.append(literal)
        if field_name is None:
            continue
        if spec or conversion or field_name not in values:
            shown = "{" + field_name + "}"
            raise RecipeError(f"{where} uses unknown placeholder {shown}", hint=available)
        out.append(values[field_name])
    return "".join(out)


#: What each filled name must be: the OCI distribution grammar, or one file-name segment.
NAME_RULES = {
    ("image", "name"): (
        REMOTE_NAME,
        "an OCI repository name: lowercase [a-z0-9] components joined by . _ __ or -, "
        "separated by /",
    ),
    ("image", "tag"): (
        IMAGE_TAG,
        "an OCI tag: up to 128 letters, digits and _ . -, not starting with . or -",
    ),
    ("modules", "name"): (PATH_SEGMENT, "one file name: letters, digits, . _ + -, no leading ."),
    ("modules", "version"): (
        PATH_SEGMENT,
        "one file name: letters, digits, . _ + -, no leading .",
    ),
}


def _check_names(
    variant_name: str,
    names: dict[KeyPath, str],
    reference: str,
    where: Callable[[KeyPath], str],
) -> None:
    """Filled names must be what registries and file systems accept (NAME_RULES)."""
    for key, value in names.items():
        pattern, what = NAME_RULES[key]
        if not pattern.fullmatch(value):
            raise RecipeError(
                f"{where(key)}: {format_path(key)} becomes {value!r} in variant {variant_name}, "
                f"which is not {what}",
                hint=f"change {format_path(key)} (placeholders take the target's and "
                "framework's names and versions)",
            )
    problem = image_reference_problem(reference)
    if problem:
        raise RecipeError(
            f"{where(('image', 'name'))}: the image reference of variant {variant_name}, "
            f"{reference!r}, {problem}",
            hint="shorten image.registry or image.name",
        )


def resolve_variant(recipe: Recipe, target: str, framework: str) -> Variant:
    """Merge defaults, target, framework and matching overrides into a checked Variant."""
    doc = recipe.document
    layers: list[Layer] = [
        recipe.layer_for_defaults(),
        recipe.layer_for_target(target),
        recipe.layer_for_framework(framework),
    ]
    for index, override in enumerate(recipe.file.overrides):
        if rule_matches(override.match, target, framework):
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
    check_cuda_facts(
        settings, name, lambda key: doc.where(origin.get(key, origin.get(key[:1], key)))
    )
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

    def where(key: KeyPath) -> str:
        """file:line of the layer that set a resolved key, else of the variant's target."""
        return doc.where(origin.get(key, ("targets", target)))

    def fill(key: KeyPath) -> str:
        section = getattr(settings, str(key[0]))
        template = getattr(section, str(key[1]))
        return _fill(template, values, recipe, origin.get(key, key))

    def where_name(key: KeyPath) -> str:
        # A name left at its default is made of the framework's name and version.
        return doc.where(origin.get(key, ("frameworks", framework)))

    names = {key: fill(key) for key in NAME_RULES}
    reference = f"{settings.image.registry}/{names['image', 'name']}:{names['image', 'tag']}"
    _check_names(name, names, reference, where_name)
    check_variant_rules(name, target, settings, where)
    return Variant(
        recipe_name=stack.name,
        recipe_path=recipe.path,
        recipe_digest=recipe.digest,
        stack=stack,
        target=target,
        framework=framework,
        settings=settings,
        provenance=prov,
        image_name=names["image", "name"],
        image_tag=names["image", "tag"],
        module_name=names["modules", "name"],
        module_version=names["modules", "version"],
        patch_files=_patch_files(recipe, settings, where),
    )


def _patch_files(
    recipe: Recipe, settings: Settings, where: Callable[[KeyPath], str]
) -> tuple[Path, ...]:
    """The patch files, each inside the recipe's directory tree (symlinks resolved)."""
    root = recipe.path.parent.resolve()
    files: list[Path] = []
    for index, patch in enumerate(settings.horovod.patches):
        at = f"{where(('horovod', 'patches'))}: horovod.patches[{index}]"
        file = (root / patch.path).resolve()
        if not file.is_relative_to(root):
            raise RecipeError(
                f"{at}: patch {patch.path!r} resolves to {file}, outside the recipe's "
                f"directory {root}",
                hint="keep patches beside the recipe (a symbolic link must point inside too)",
            )
        if not file.is_file():
            raise RecipeError(
                f"{at}: patch {patch.path!r} not found (looked for {file})",
                hint="patch paths are relative to the recipe file",
            )
        clash = [f for f in files if f.name == file.name]
        if clash:
            raise RecipeError(
                f"{at}: patch {patch.path!r} has the same file name as {clash[0]}: the build "
                "context keeps patches by file name, so one would replace the other",
                hint="rename one of the two patch files",
            )
        files.append(file)
    return tuple(files)


def check_variant_rules(
    name: str, target: str, settings: Settings, where: Callable[[KeyPath], str]
) -> None:
    """Cross-field rules whose breach makes a variant unbuildable or its modules broken."""
    h = settings.horovod
    if "nccl" in h.tensor_operations and settings.cuda is None:
        raise RecipeError(
            f"{where(('horovod', 'tensor_operations'))}: horovod.tensor_operations lists nccl "
            f"(GPU tensor operations), but variant {name} has no `cuda:`: NCCL needs CUDA",
            hint=f"drop nccl for this target (set horovod.tensor_operations under "
            f"targets.{target}), or give target {target} a `cuda:` section",
        )
    for op in ("mpi", "gloo"):
        if op in h.tensor_operations and op not in h.controllers:
            raise RecipeError(
                f"{where(('horovod', 'tensor_operations'))}: horovod.tensor_operations lists "
                f"{op}, but horovod.controllers ({', '.join(h.controllers)}) does not: Horovod "
                f"has no {op.upper()} operations without the {op.upper()} controller "
                f"(variant {name})",
                hint=f"add {op} to horovod.controllers, or remove it from tensor_operations",
            )
    flavor, other = settings.mpi.flavor, {"mpich": "openmpi", "openmpi": "mpich"}
    mixed = [
        p
        for p in (*settings.mpi.build_packages, *settings.mpi.runtime_packages)
        if other[flavor] in p.lower()
    ]
    if mixed:
        raise RecipeError(
            f"{where(('mpi', 'flavor'))}: mpi.flavor is {flavor}, but the MPI packages include "
            f"{mixed[0]!r} (variant {name}): Horovod would be compiled against another MPI "
            "than the one the image is labelled and launched with",
            hint=f"set mpi.build_packages and mpi.runtime_packages to {flavor}'s packages",
        )
    if "torchrun" in settings.modules.commands and settings.pytorch is None:
        raise RecipeError(
            f"{where(('modules', 'commands'))}: modules.commands has torchrun, but variant "
            f"{name} has no PyTorch: its wrapper would run a command the image lacks",
            hint="list torchrun only for PyTorch variants (e.g. under frameworks.pytorch)",
        )


def expand_matrix(recipe: Recipe) -> list[Variant]:
    """Every variant of the recipe, in matrix order, minus exclusions."""
    return [resolve_variant(recipe, t, f) for t, f in matrix_cells(recipe)]


def select_variant(variants: list[Variant], name: str) -> Variant:
    """The variant called `name`, or an error listing the valid names."""
    for variant in variants:
        if variant.name == name:
            return variant
    valid = ", ".join(v.name for v in variants)
    raise RecipeError(f"unknown variant {name!r}", hint=f"valid variants: {valid}")


def with_runtime(variant: Variant, runtime: str) -> Variant:
    """The variant with its module wrappers' runtime replaced (`render --runtime`)."""
    modules = variant.settings.modules.model_copy(update={"runtime": runtime})
    return replace(variant, settings=variant.settings.model_copy(update={"modules": modules}))
