"""Errors meant for people: what went wrong, where, and what to do."""

from __future__ import annotations


class StackbuildError(Exception):
    """A user-facing error; the CLI prints it without a traceback and exits 2."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  fix: {self.hint}"
        return self.message


class RecipeError(StackbuildError):
    """A recipe file is malformed or fails the schema."""


class TemplateError(StackbuildError):
    """A template is missing, broken, or uses an undefined variable."""


class ToolError(StackbuildError):
    """An external command is missing or failed."""

    exit_code = 1
