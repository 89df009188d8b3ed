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


#: Limits that no real recipe comes near (the shipped ones: under 10 KB, about 300 nodes,
#: 6 levels deep); past them a document is refused before it can exhaust time or memory.
MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
#: Nodes after alias expansion: a few aliases can stand for billions of nodes ("billion laughs").
MAX_NODES = 20_000

_SIZE_HINT = "a recipe is a short file; write repeated settings once under `defaults:`"


class _RecipeLoader(yaml.SafeLoader):
    """A safe loader that refuses documents nested deeper than MAX_DEPTH while composing."""

    def __init__(self, text: str, path: Path) -> None:
        super().__init__(text)
        self.recipe_path = path
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise RecipeError(
                    f"{self.recipe_path}:{mark.line + 1}: nested more than {MAX_DEPTH} levels deep",
                    hint="a recipe nests a few levels (targets: NAME: env: KEY: value); look for "
                    "brackets that never close",
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Merge keys (<<: *anchor) copy the merged entries into the node: bound their number.
        super().flatten_mapping(node)
        if len(node.value) > MAX_NODES:
            raise RecipeError(
                f"{self.recipe_path}:{node.start_mark.line + 1}: merge keys (<<) expand this "
                f"mapping to more than {MAX_NODES} entries",
                hint=_SIZE_HINT,
            )


@dataclass
class _Budget:
    """Nodes left to visit while converting (aliases count every time they are expanded)."""

    left: int = MAX_NODES


def _to_python(
    loader: _RecipeLoader,
    node: yaml.Node,
    path: KeyPath,
    doc: YamlDocument,
    budget: _Budget,
) -> Any:
    budget.left -= 1
    if budget.left < 0 or len(path) > MAX_DEPTH:
        what = f"more than {MAX_NODES} values" if budget.left < 0 else "a cycle of aliases"
        raise RecipeError(
            f"{doc.path}:{node.start_mark.line + 1}: the document expands to {what} "
            "(YAML aliases `*name` repeat what their anchor `&name` holds)",
            hint=_SIZE_HINT,
        )
    if node.tag not in _PLAIN_TAGS:
        raise RecipeError(
            f"{doc.path}:{node.start_mark.line + 1}: the YAML tag {node.tag!r} is not allowed "
            "in a recipe",
            hint="remove the `!!` tag: a recipe holds plain strings, numbers, lists and mappings",
        )
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise RecipeError(
                    f"{doc.path}:{key_node.start_mark.line + 1}: a key must be a plain name, "
                    "not a list or mapping",
                    hint="write keys as names followed by `:`",
                )
            key = _scalar(loader, key_node, doc)
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
            result[key] = _to_python(loader, value_node, child, doc, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.lines[child] = item.start_mark.line + 1
            items.append(_to_python(loader, item, child, doc, budget))
        return items
    return _scalar(loader, node, doc)


def _scalar(loader: _RecipeLoader, node: yaml.Node, doc: YamlDocument) -> Any:
    """Construct one scalar; values PyYAML cannot build (a 5000-digit int) become errors."""
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, OverflowError):
        kind = _TAG_NAMES.get(node.tag, node.tag)
        raise RecipeError(
            f"{doc.path}:{node.start_mark.line + 1}: cannot read "
            f"{_shorten(str(node.value))!r} as {kind}",
            hint="write a number of sensible size, or quote the value to make it a string",
        ) from None


#: The tags plain YAML resolves to (dates included: the schema then asks for a string);
#: explicit others (!!python/..., !!binary, !!set) have no place in a recipe.
_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "timestamp", "seq", "map")
)
_TAG_NAMES = {
    "tag:yaml.org,2002:int": "an integer",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:timestamp": "a date",
}


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _decode(path: Path, raw: bytes) -> str:
    """The file's text; not UTF-8 is an error naming the line and byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = raw[exc.start]
        raise RecipeError(
            f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x} at column {column})",
            hint="save the recipe as UTF-8 (e.g. `iconv -f latin1 -t utf-8`); "
            "a binary file is not a recipe",
        ) from None


_TYPE_NAMES = {list: "a list", str: "a string", int: "a number", float: "a number"}


def load_yaml_document(path: Path) -> YamlDocument:
    """Parse a YAML file whose top level is a mapping, recording key lines."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RecipeError(
                f"{path}: {size} bytes is larger than a recipe may be ({MAX_FILE_BYTES} bytes)",
                hint=_SIZE_HINT,
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError(
            f"recipe file {path} does not exist", hint="run `stackbuild list` to see the recipes"
        ) from None
    except IsADirectoryError:
        raise RecipeError(f"{path} is a directory, not a recipe file") from None
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {exc.strerror}") from None
    text = _decode(path, raw[:MAX_FILE_BYTES])
    doc = YamlDocument(path=path, data={})
    try:
        loader = _RecipeLoader(text, path)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeError(f"{path}: the file is empty", hint="a recipe needs at least `stack:`")
        data = _to_python(loader, node, (), doc, _Budget())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "unreadable"
        hint = "check indentation and quoting near that line"
        if "'\\t'" in problem:
            hint = "indent with spaces: YAML does not allow tabs there"
        elif "single document" in str(exc):
            hint = "a recipe file holds one YAML document: remove the `---` separators"
        raise RecipeError(f"{path}{line}: not valid YAML: {problem}", hint=hint) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        kind = _TYPE_NAMES.get(type(data), "nothing" if data is None else type(data).__name__)
        raise RecipeError(
            f"{path}:{node.start_mark.line + 1}: the top level must be a mapping of keys "
            f"(stack:, ...), not {kind}",
            hint="see recipes/README.md for the recipe format",
        )
    doc.data = data
    return doc


def _reader_error(path: Path, text: str, exc: yaml.reader.ReaderError) -> RecipeError:
    """PyYAML's reader refuses non-printable characters; say where, as file:line."""
    line = text[: exc.position].count("\n") + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return RecipeError(
        f"{path}:{line}: contains the control character U+{ord(char):04X}, "
        "which a YAML file may not hold",
        hint="remove it; a binary file is not a recipe",
    )
