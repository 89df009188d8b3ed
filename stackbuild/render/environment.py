"""The Jinja environment: template search path (site overrides first), filters, strictness."""

from __future__ import annotations

from pathlib import Path

import jinja2

from stackbuild import PROJECT_ROOT
from stackbuild.errors import TemplateError
from stackbuild.render.quoting import (
    Quoted,
    lua_quote,
    shell_join,
    shell_quote,
    tcl_quote,
    text_block,
)

BUILTIN_TEMPLATES = PROJECT_ROOT / "templates"


def _finalize(value: object) -> object:
    """Only quoted strings and numbers may be printed by a template."""
    if isinstance(value, Quoted | bool | int | float):
        return value
    raise TemplateError(
        f"a template printed the unquoted value {value!r}",
        hint="pipe it through a quoting filter: |q (shell), |qjoin, |lua, |tcl or |text",
    )


def make_environment(site_dir: Path | None = None) -> jinja2.Environment:
    """A strict environment; `site_dir` templates override built-in ones of the same name.

    A site template can also extend the built-in one and replace single blocks:
    `{% extends "builtin/Containerfile.j2" %}{% block runtime_env %}...{% endblock %}`.
    """
    builtin = jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES))
    loaders: list[jinja2.BaseLoader] = []
    if site_dir is not None:
        if not site_dir.is_dir():
            raise TemplateError(
                f"template directory {site_dir} does not exist",
                hint="pass an existing directory to --templates, or leave it out to use the "
                "built-in templates",
            )
        loaders.append(jinja2.FileSystemLoader(str(site_dir)))
    loaders.append(jinja2.PrefixLoader({"builtin": builtin}))
    loaders.append(builtin)
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_finalize,
    )
    env.filters.update(
        q=shell_quote, qjoin=shell_join, lua=lua_quote, tcl=tcl_quote, text=text_block
    )
    return env


def _failing_template(exc: BaseException) -> str | None:
    """The template file Jinja was executing when exc was raised (its frames carry the name)."""
    found, tb = None, exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = filename
        tb = tb.tb_next
    if found is None:
        return None
    for root in (BUILTIN_TEMPLATES,):
        try:
            return str(Path(found).relative_to(root))
        except ValueError:
            pass
    return found


def render_template(env: jinja2.Environment, name: str, context: dict[str, object]) -> str:
    """Render one template, turning Jinja failures into errors that name template and variable."""
    try:
        template = env.get_template(name)
        return template.render(context)
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"template {exc.name!r} not found (needed to render {name!r})",
            hint=f"built-in templates live in {BUILTIN_TEMPLATES}; a site directory must use the "
            "same file names",
        ) from None
    except jinja2.UndefinedError as exc:
        where = _failing_template(exc) or name
        raise TemplateError(
            f"template {where!r} uses an undefined variable: {exc.message}",
            hint="fix the template, or add the value to the recipe; variables available: "
            + ", ".join(sorted(context)),
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(
            f"template {exc.filename or name}:{exc.lineno}: syntax error: {exc.message}"
        ) from None
