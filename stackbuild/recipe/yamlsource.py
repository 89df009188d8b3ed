"""Read YAML while remembering the line of every key, so errors can point at it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stackbuild.errors import RecipeError

KeyPath = tuple[str | int, ...]


def format_path(path: KeyPath) -> str:
    """Render ('targets', 'knl', 'env', 0) as targets.knl.env[0]."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


@dataclass
class YamlDocument:
    """A parsed YAML mapping plus the source line of every key and list item."""

    path: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, key_path: KeyPath) -> int | None:
        """The line of key_path, or of its nearest ancestor that has one."""
        probe = tuple(key_path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return None

    def where(self, key_path: KeyPath) -> str:
        """'file:line' for a key path, for error messages."""
        line = self.line_of(key_path)
        shown = os.path.relpath(self.path)
        if shown.startswith(".."):
            shown = str(self.path)
        return f"{shown}:{line}" if line else shown


def _to_python(loader: yaml.SafeLoader, node: yaml.Node, path: KeyPath, doc: YamlDocument) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in result:
                raise RecipeError(
                    f"{doc.path}:{key_node.start_mark.line + 1}: key {format_path(child)!r} "
                    "appears twice",
                    hint="remove one of the two entries",
                )
            doc.lines[child] = key_node.start_mark.line + 1
            result[key] = _to_python(loader, value_node, child, doc)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.lines[child] = item.start_mark.line + 1
            items.append(_to_python(loader, item, child, doc))
        return items
    return loader.construct_object(node, deep=True)


def load_yaml_document(path: Path) -> YamlDocument:
    """Parse a YAML file whose top level is a mapping, recording key lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(
            f"recipe file {path} does not exist", hint="run `stackbuild list` to see the recipes"
        ) from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {exc.strerror}") from None
    doc = YamlDocument(path=path, data={})
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeError(f"{path}: the file is empty", hint="a recipe needs at least `stack:`")
        data = _to_python(loader, node, (), doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise RecipeError(
            f"{path}{line}: not valid YAML: {exc.problem or exc.context}",
            hint="check indentation and quoting near that line",
        ) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path}: the top level must be a mapping of keys, not {type(data).__name__}"
        )
    doc.data = data
    return doc
