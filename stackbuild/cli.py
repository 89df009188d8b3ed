"""The `stackbuild` command: a click group whose subcommands live in stackbuild/commands/."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape

from stackbuild import __version__
from stackbuild.commands import ALL_COMMANDS
from stackbuild.errors import StackbuildError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stackbuild")
def cli() -> None:
    """Build, validate and publish deep-learning container stacks from recipes."""


for _command in ALL_COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; user errors print a message and exit 2, never a traceback."""
    try:
        # Outside standalone mode click returns (not raises) the code of an explicit Exit,
        # e.g. `validate`'s 1 when a check fails: it must become the process's status.
        code = cli.main(args=argv, prog_name="stackbuild", standalone_mode=False)
    except StackbuildError as exc:
        # escape: messages quote recipe values and grammars ("[a-z0-9]", "[/path]"), which
        # rich would otherwise read as markup, drop, or fail on.
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        return exc.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
