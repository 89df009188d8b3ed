"""Quoting for every value that reaches a generated file, one filter per target language.

Templates may only print values that went through one of these filters (or plain numbers):
the Jinja environment's `finalize` hook rejects any other string, so a recipe value can never
reach a shell line unquoted by accident.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable


class Quoted(str):
    """A string already quoted for the language of the file it goes into."""

    __slots__ = ()


def shell_quote(value: object) -> Quoted:
    """Quote one value for POSIX sh (and Containerfile ENV/LABEL/RUN lines)."""
    return Quoted(shlex.quote(str(value)))


def shell_join(values: Iterable[object]) -> Quoted:
    """Quote each value and join them with spaces: a safe argument list."""
    return Quoted(" ".join(shlex.quote(str(v)) for v in values))


def lua_quote(value: object) -> Quoted:
    """A Lua string literal."""
    text = str(value)
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return Quoted(f'"{escaped}"')


def tcl_quote(value: object) -> Quoted:
    """A Tcl word in braces-free double quotes with every special character escaped."""
    text = str(value)
    for char in ("\\", '"', "$", "[", "]", "{", "}"):
        text = text.replace(char, "\\" + char)
    return Quoted(f'"{text.replace(chr(10), chr(92) + "n")}"')


def text_block(value: object) -> Quoted:
    """Free text for comments and help blocks: one line per input line, no control characters."""
    text = "".join(ch for ch in str(value) if ch == "\n" or ch.isprintable())
    return Quoted(text.replace("]]", "] ]"))
