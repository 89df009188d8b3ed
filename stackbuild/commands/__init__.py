"""CLI subcommands, one module per stage of the data flow."""

from __future__ import annotations

import click

from stackbuild.commands.build import BUILD_COMMANDS
from stackbuild.commands.kernels import kernels_command
from stackbuild.commands.notebooks import notebooks_command
from stackbuild.commands.recipes import lint_command, list_command, render_command, show_command
from stackbuild.commands.validate import validate_command

ALL_COMMANDS: list[click.Command] = [
    list_command,
    show_command,
    render_command,
    lint_command,
    *BUILD_COMMANDS,
    validate_command,
    kernels_command,
    notebooks_command,
]
