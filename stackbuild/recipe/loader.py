"""Load a recipe file and check it against the schema, with errors that point at lines."""

from __future__ import annotations

import difflib
import hashlib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from stackbuild.errors import RecipeError
from stackbuild.recipe.schema import KIND_HINTS, MatrixRule, RecipeFile, Settings, control_character
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
    # pydantic adds the union member it tried ("constrained-int", "literal['auto']"): not a key.
    loc = tuple(part for part in loc if not _is_union_member(part))
    is_key = bool(loc) and loc[-1] == "[key]"  # pydantic's marker for a mapping's key
    if is_key:
        loc = loc[:-1]
    where = doc.where(loc)
    key = format_path(loc)
    suffix = f" ({context})" if context else ""
    kind = err["type"]
    if is_key:
        what = KEY_KINDS.get(str(loc[-2]) if len(loc) > 1 else "", "")
        detail = f"it must be {what}" if what else str(err["msg"])
        return RecipeError(
            f"{where}: the key {_shown(loc[-1])} under {format_path(loc[:-1])} is not "
            f"allowed{suffix}: {detail}",
            hint=KIND_HINTS.get(kind, "rename the key"),
        )
    if kind == "missing":
        return RecipeError(
            f"{where}: missing required value {key!r}{suffix}",
            hint=f"add `{loc[-1]}:` under {format_path(loc[:-1])!r}",
        )
    if kind == "extra_forbidden":
        return RecipeError(f"{where}: unknown key {key!r}{suffix}", hint="remove it")
    value = err.get("input")
    if kind in KIND_HINTS:
        return RecipeError(
            f"{where}: {key} = {_shown(value)} {err['msg']}{suffix}", hint=KIND_HINTS[kind]
        )
    if kind == "string_too_long":
        return RecipeError(
            f"{where}: {key} is {len(value)} characters long, more than "
            f"{err.get('ctx', {}).get('max_length')}{suffix}",
            hint="shorten it",
        )
    if kind == "string_pattern_mismatch" and _pattern_kind(loc):
        what, example = _pattern_kind(loc) or ("", "")
        return RecipeError(
            f"{where}: {key} = {_shown(value)} is not allowed{suffix}: it must be {what}",
            hint=f"e.g. {example}",
        )
    if kind == "string_pattern_mismatch" and "runtime_prune" in loc:
        return RecipeError(
            f"{where}: {key} = {value!r} is not allowed{suffix}: it must be a path inside "
            "site-packages, relative, made of letters, digits and . _ - between slashes",
            hint="write it as pip shows the package's files, e.g. torch/include",
        )
    if kind == "string_pattern_mismatch":
        return RecipeError(
            f"{where}: {key} = {_shown(value)} is not allowed{suffix}: it may only contain "
            "letters, digits and . _ + - ~ (and version operators for packages); shell "
            "metacharacters such as ; & | $ ` ( ) < > quotes and spaces are rejected",
            hint="write a plain version or package name, e.g. 2.21.0 or numpy==1.26.4",
        )
    return RecipeError(
        f"{where}: {key}: {str(err['msg']).lower()} (got {_shown(value)}){suffix}",
        hint="see recipes/README.md for the recipe format",
    )


#: Mappings whose keys the schema checks: what a key must look like.
KEY_KINDS = {
    "env": "an environment variable name: letters, digits and _, not starting with a digit",
    "build_env": "an environment variable name: letters, digits and _, not starting with a digit",
    "labels": "an OCI label key: letters, digits and . _ - (reverse-DNS style, e.g. "
    "org.opencontainers.image.vendor)",
    "volumes": "an absolute path of plain characters (no `:`, no spaces, no `..`)",
    "targets": "a lowercase name: letters, digits and . _ -",
    "frameworks": "a lowercase name: letters, digits and . _ -",
}
_UNION_MEMBER = re.compile(
    r"^(constrained-|function-|literal\[|lax-|strict-)|^(int|str|float|bool)$"
)


def _is_union_member(part: str | int) -> bool:
    return isinstance(part, str) and bool(_UNION_MEMBER.match(part))


def _shown(value: Any, limit: int = 80) -> str:
    """repr of a value for a one-line message, cut short when long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


#: Values that match a pattern, by (parent key, key): what the pattern wants, an example.
_PATTERN_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("image", "name"): (
        "lowercase letters, digits, . _ - / and {placeholders}",
        "stackbuild/{framework}",
    ),
    ("image", "tag"): ("letters, digits, . _ - and {placeholders}", "{framework_version}-{target}"),
    ("modules", "name"): (
        "one file name: letters, digits, . _ + - and {placeholders}, no `/`",
        "{framework}",
    ),
    ("modules", "version"): (
        "one file name: letters, digits, . _ + - and {placeholders}, no `/`",
        "{framework_version}-{target}",
    ),
    ("modules", "commands"): ("a command name: letters, digits and . _ + -", "python3"),
    ("modules", "conflicts"): ("a module name, or name/version", "pytorch"),
    ("jobs", "time"): ("a Slurm time limit", "01:30:00 or 1-00:00:00"),
    ("jobs", "constraint"): ("Slurm features joined by & | , with [ ] ( ) * : !", "knl&quad"),
    ("jobs", "qos"): ("a Slurm name: letters, digits and . _ + -", "regular"),
    ("jobs", "account"): ("a Slurm name: letters, digits and . _ + -", "m1234"),
    ("jobs", "shifter_modules"): ("a Shifter module name: letters, digits and . _ + -", "mpich"),
    ("stack", "labels"): (
        "an OCI label key: letters, digits and . _ - (reverse-DNS style)",
        "org.opencontainers.image.vendor",
    ),
}


def _pattern_kind(loc: KeyPath) -> tuple[str, str] | None:
    """What a pattern-checked value at loc must look like, if known (list indexes skipped)."""
    names = [part for part in loc if isinstance(part, str) and part != "[key]"]
    for depth in (2, 3):
        if len(names) >= depth:
            found = _PATTERN_KINDS.get((names[-depth], names[-depth + 1]))
            if found:
                return found
    return None


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
    check_control_characters(doc, doc.data, ())
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
    _check_matrix_rules(recipe)
    return recipe


#: Free text that may span lines: every use folds or escapes the newlines (labels join the
#: words, module help goes into a quoted block).
FREE_TEXT_KEYS = frozenset({"description", "license_notes", "help"})


def check_control_characters(doc: YamlDocument, data: Any, path: KeyPath) -> None:
    """Refuse control characters in every key and string of the file, with file:line.

    Newlines are allowed only in free text (FREE_TEXT_KEYS); the schema checks each value's
    kind as well, this pass also covers keys and values the schema takes as plain mappings.
    """
    if isinstance(data, dict):
        items: list[tuple[str | int, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return
    for key, value in items:
        child = (*path, key)
        if isinstance(key, str) and control_character(key):
            raise RecipeError(
                f"{doc.where(child)}: the key {_shown(key)} under "
                f"{format_path(path)} contains the control character {control_character(key)}",
                hint=KIND_HINTS["control_character"],
            )
        if isinstance(value, str):
            free = isinstance(key, str) and key in FREE_TEXT_KEYS
            found = control_character(value, allow_newlines=free)
            if found:
                newline = found in ("U+000A", "U+000D")
                what = "a newline" if newline else f"the control character {found}"
                raise RecipeError(
                    f"{doc.where(child)}: {format_path(child)} = {_shown(value)} contains {what}",
                    hint="remove it (free text may span lines, nothing else)"
                    if free
                    else KIND_HINTS["control_character"],
                )
        else:
            check_control_characters(doc, value, child)


def _check_matrix_names(recipe: Recipe) -> None:
    file, doc = recipe.file, recipe.document
    for kind, names, known in (
        ("targets", file.matrix.targets, file.targets),
        ("frameworks", file.matrix.frameworks, file.frameworks),
    ):
        for index, name in enumerate(names):
            if name not in known:
                raise RecipeError(
                    f"{doc.where(('matrix', kind, index))}: matrix.{kind} names {name!r}, "
                    f"which is not defined under `{kind}:`",
                    hint=_did_you_mean(name, known, kind),
                )
            if name in names[:index]:
                raise RecipeError(
                    f"{doc.where(('matrix', kind, index))}: matrix.{kind} names {name!r} twice",
                    hint="list each name once: every variant is built once",
                )


def _did_you_mean(name: str, known: Mapping[str, Any], kind: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}defined {kind}: {', '.join(sorted(known))}"


def matrix_cells(recipe: Recipe) -> list[tuple[str, str]]:
    """(target, framework) of every variant: matrix.targets x frameworks, minus exclusions."""
    matrix = recipe.file.matrix
    return [
        (target, framework)
        for target in matrix.targets
        for framework in matrix.frameworks
        if not any(rule_matches(rule, target, framework) for rule in matrix.exclude)
    ]


def rule_matches(rule: MatrixRule, target: str, framework: str) -> bool:
    """Whether a match/exclude rule selects the variant target x framework."""
    return rule.target in (None, target) and rule.framework in (None, framework)


def _check_matrix_rules(recipe: Recipe) -> None:
    """Exclusions and overrides must name defined things and select at least one variant."""
    file, doc = recipe.file, recipe.document
    matrix = file.matrix
    every = [(t, f) for t in matrix.targets for f in matrix.frameworks]
    rules = [(("matrix", "exclude", i), rule) for i, rule in enumerate(matrix.exclude)]
    rules += [(("overrides", i, "match"), o.match) for i, o in enumerate(file.overrides)]
    for key, rule in rules:
        for kind, name, known in (
            ("target", rule.target, file.targets),
            ("framework", rule.framework, file.frameworks),
        ):
            if name is not None and name not in known:
                raise RecipeError(
                    f"{doc.where((*key, kind))}: {format_path((*key, kind))} names {name!r}, "
                    f"which is not defined under `{kind}s:`",
                    hint=_did_you_mean(name, known, f"{kind}s"),
                )
    for index, rule in enumerate(matrix.exclude):
        if not any(rule_matches(rule, t, f) for t, f in every):
            raise RecipeError(
                f"{doc.where(('matrix', 'exclude', index))}: matrix.exclude[{index}] "
                f"({_describe_rule(rule)}) excludes no variant of the matrix",
                hint="remove it, or name a target and framework that matrix.targets and "
                "matrix.frameworks list",
            )
    cells = matrix_cells(recipe)
    if not cells:
        raise RecipeError(
            f"{doc.where(('matrix', 'exclude'))}: matrix.exclude removes every variant: "
            "the recipe would build nothing",
            hint="remove or narrow an exclusion (each rule drops the variants it matches)",
        )
    # An override of an excluded variant stays valid, so that an exclusion can be toggled
    # without editing the overrides; one that matches no cell of the matrix is a mistake.
    for index, override in enumerate(file.overrides):
        if not any(rule_matches(override.match, t, f) for t, f in every):
            raise RecipeError(
                f"{doc.where(('overrides', index, 'match'))}: overrides[{index}].match "
                f"({_describe_rule(override.match)}) selects no variant of the matrix, so its "
                "settings never apply",
                hint="variants: "
                + ", ".join(f"{f}-{t}" for t, f in cells)
                + "; fix the match (or the matrix), or remove the override",
            )


def _describe_rule(rule: MatrixRule) -> str:
    parts = [f"{k}: {v}" for k, v in (("target", rule.target), ("framework", rule.framework)) if v]
    return ", ".join(parts) or "matches everything"
