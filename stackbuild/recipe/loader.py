"""Load a recipe file and check it against the schema, with errors that point at lines."""

from __future__ import annotations

import difflib
import hashlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from stackbuild.errors import RecipeError
from stackbuild.recipe.schema import RecipeFile, Settings
from stackbuild.recipe.yamlsource import KeyPath, YamlDocument, format_path, load_yaml_document


@dataclass(frozen=True)
class Layer:
    """One partial-Settings layer of a recipe: its label, data and where it starts in the file."""

    label: str
    data: dict[str, Any]
    key_path: KeyPath


@dataclass(frozen=True)
class Recipe:
    """A checked recipe: the parsed file, its layers, and its source for error messages."""

    path: Path
    document: YamlDocument
    file: RecipeFile
    digest: str

    @property
    def name(self) -> str:
        return self.file.stack.name

    def layer_for_defaults(self) -> Layer:
        return Layer("recipe defaults", self.file.defaults, ("defaults",))

    def layer_for_target(self, target: str) -> Layer:
        return Layer(f"target {target}", self.file.targets[target], ("targets", target))

    def layer_for_framework(self, framework: str) -> Layer:
        return Layer(
            f"framework {framework}", self.file.frameworks[framework], ("frameworks", framework)
        )

    def layer_for_override(self, index: int) -> Layer:
        return Layer(
            f"override #{index + 1}", self.file.overrides[index].set, ("overrides", index, "set")
        )


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside an annotation like `Cuda | None`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _list_item_model(annotation: Any) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return _model_of(item)
    return None


def check_keys(doc: YamlDocument, data: Any, model: type[BaseModel], path: KeyPath) -> None:
    """Reject keys the model does not know, naming the line and the closest valid key."""
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            suggestion = f"did you mean {close[0]!r}?" if close else "remove it"
            where = format_path((*path, key))
            raise RecipeError(
                f"{doc.where((*path, key))}: unknown key {where!r}",
                hint=f"{suggestion} (valid keys here: {', '.join(sorted(fields))})",
            )
        annotation = fields[key].annotation
        sub = _model_of(annotation)
        if sub is not None and isinstance(value, dict):
            check_keys(doc, value, sub, (*path, key))
        item_model = _list_item_model(annotation)
        if item_model is not None and isinstance(value, list):
            for index, item in enumerate(value):
                check_keys(doc, item, item_model, (*path, key, index))


def describe_validation_error(
    doc: YamlDocument, err: Mapping[str, Any], loc: KeyPath, context: str = ""
) -> RecipeError:
    """Turn one pydantic error at file key path `loc` into a RecipeError with file:line."""
    where = doc.where(loc)
    key = format_path(loc)
    suffix = f" ({context})" if context else ""
    kind = err["type"]
    if kind == "missing":
        return RecipeError(
            f"{where}: missing required value {key!r}{suffix}",
            hint=f"add `{loc[-1]}:` under {format_path(loc[:-1])!r}",
        )
    if kind == "extra_forbidden":
        return RecipeError(f"{where}: unknown key {key!r}{suffix}", hint="remove it")
    value = err.get("input")
    if kind == "string_pattern_mismatch" and "runtime_prune" in loc:
        return RecipeError(
            f"{where}: {key} = {value!r} is not allowed{suffix}: it must be a path inside "
            "site-packages, relative, made of letters, digits and . _ - between slashes",
            hint="write it as pip shows the package's files, e.g. torch/include",
        )
    if kind == "string_pattern_mismatch":
        return RecipeError(
            f"{where}: {key} = {value!r} is not allowed{suffix}: it may only contain letters, "
            "digits and . _ + - ~ (and version operators for packages); shell metacharacters "
            "such as ; & | $ ` ( ) < > quotes and spaces are rejected",
            hint="write a plain version or package name, e.g. 2.21.0 or numpy==1.26.4",
        )
    return RecipeError(
        f"{where}: {key}: {str(err['msg']).lower()} (got {value!r}){suffix}",
        hint="see recipes/README.md for the recipe format",
    )


def first_error(
    exc: ValidationError, prefix: KeyPath, *, skip_missing: bool = False
) -> tuple[Mapping[str, Any], KeyPath] | None:
    """The first error of a ValidationError and its full key path, optionally ignoring 'missing'."""
    for err in exc.errors():
        if skip_missing and err["type"] == "missing":
            continue
        return err, (*prefix, *err["loc"])
    return None


def check_layer(doc: YamlDocument, layer: Layer) -> None:
    """Check a partial-Settings layer: known keys, and right types where values are given."""
    if not isinstance(layer.data, dict):
        raise RecipeError(
            f"{doc.where(layer.key_path)}: {format_path(layer.key_path)} must be a mapping"
        )
    check_keys(doc, layer.data, Settings, layer.key_path)
    try:
        Settings.model_validate(layer.data)
    except ValidationError as exc:
        # A layer is partial: values that other layers supply may be missing here.
        found = first_error(exc, layer.key_path, skip_missing=True)
        if found:
            raise describe_validation_error(doc, found[0], found[1]) from None


def load_recipe(path: Path) -> Recipe:
    """Parse and check a recipe file; raise RecipeError naming file, line and key on any problem."""
    path = Path(path)
    doc = load_yaml_document(path)
    check_keys(doc, doc.data, RecipeFile, ())
    try:
        file = RecipeFile.model_validate(doc.data)
    except ValidationError as exc:
        err, loc = first_error(exc, ()) or ({}, ())
        raise describe_validation_error(doc, err, loc) from None
    recipe = Recipe(
        path=path, document=doc, file=file, digest=hashlib.sha256(path.read_bytes()).hexdigest()
    )
    layers = [recipe.layer_for_defaults()]
    layers += [recipe.layer_for_target(t) for t in file.targets]
    layers += [recipe.layer_for_framework(f) for f in file.frameworks]
    layers += [recipe.layer_for_override(i) for i in range(len(file.overrides))]
    for layer in layers:
        check_layer(doc, layer)
    _check_matrix_names(recipe)
    return recipe


def _check_matrix_names(recipe: Recipe) -> None:
    file, doc = recipe.file, recipe.document
    for kind, names, known in (
        ("targets", file.matrix.targets, file.targets),
        ("frameworks", file.matrix.frameworks, file.frameworks),
    ):
        for index, name in enumerate(names):
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise RecipeError(
                    f"{doc.where(('matrix', kind, index))}: matrix.{kind} names {name!r}, "
                    f"which is not defined under `{kind}:`",
                    hint=f"{hint}defined {kind}: {', '.join(sorted(known))}",
                )
