"""`stackbuild list | show | render | lint`: recipes in, rendered files out."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from stackbuild.errors import StackbuildError
from stackbuild.lint import lint_tree
from stackbuild.recipe import Variant, expand_matrix, load_recipe, select_variant
from stackbuild.recipe.catalog import find_recipe, shipped_recipes
from stackbuild.recipe.matrix import with_runtime
from stackbuild.recipe.yamlsource import format_path
from stackbuild.render.pin import PIN_FILE, read_pin
from stackbuild.render.renderer import render_variant
from stackbuild.render.writers import WRITERS, check_formats
from validation.runtimes import RUNTIMES as CONTAINER_RUNTIMES

console = Console(highlight=False, soft_wrap=True)


def load_variants(recipe: str) -> list[Variant]:
    """Load, check and expand one recipe given by name or path."""
    return expand_matrix(load_recipe(find_recipe(recipe)))


def parse_only(value: str | None) -> list[str] | None:
    """--only containerfile,modules -> ['containerfile', 'modules']."""
    if not value:
        return None
    return check_formats([part.strip() for part in value.split(",") if part.strip()])


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(as_json: bool) -> None:
    """List the shipped recipes and their variants."""
    rows = []
    for path in shipped_recipes():
        for variant in load_variants(str(path)):
            rows.append(
                {
                    "recipe": path.stem,
                    "variant": variant.name,
                    "image": variant.image_reference,
                    "module": f"{variant.module_name}/{variant.module_version}",
                    "frameworks": variant.frameworks,
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("recipe", "variant", "image", "module")
    for row in rows:
        table.add_row(row["recipe"], row["variant"], row["image"], row["module"])
    console.print(table)


@click.command("show")
@click.argument("variant")
@click.option("--recipe", "-r", help="Recipe name or path (needed if several have VARIANT).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show_command(variant: str, recipe: str | None, as_json: bool) -> None:
    """Show a variant's resolved settings and where each value came from."""
    if recipe:
        chosen = select_variant(load_variants(recipe), variant)
    else:
        everywhere = [v for p in shipped_recipes() for v in load_variants(str(p))]
        matches = [v for v in everywhere if v.name == variant]
        if not matches:
            select_variant(everywhere, variant)  # raises with the list of valid names
        if len(matches) > 1:
            raise StackbuildError(
                f"variant {variant!r} exists in several recipes",
                hint="pick one with --recipe: " + ", ".join(m.recipe_name for m in matches),
            )
        chosen = matches[0]
    dump = chosen.settings.model_dump(mode="json")
    rows = []
    for path, source in sorted(chosen.provenance.items(), key=lambda kv: format_path(kv[0])):
        value = dump
        for part in path:
            value = value[part] if isinstance(value, dict) else value
        rows.append({"key": format_path(path), "value": value, "source": str(source)})
    if as_json:
        click.echo(
            json.dumps(
                {
                    "variant": chosen.name,
                    "recipe": chosen.recipe_name,
                    "image": chosen.image_reference,
                    "module": f"{chosen.module_name}/{chosen.module_version}",
                    "settings": rows,
                },
                indent=2,
            )
        )
        return
    console.print(Text(f"{chosen.name}  (recipe {chosen.recipe_name}: {chosen.recipe_path})"))
    console.print(Text(f"image  {chosen.image_reference}"))
    console.print(Text(f"module {chosen.module_name}/{chosen.module_version}"))
    table = Table("key", "value", "from")
    for row in rows:
        table.add_row(Text(row["key"]), Text(json.dumps(row["value"])), Text(row["source"]))
    console.print(table)


@click.command("render")
@click.argument("recipe")
@click.option("--variant", "-v", "variants", multiple=True, help="Only this variant (repeatable).")
@click.option(
    "--only",
    help=f"Comma-separated formats to render (default all): {', '.join(WRITERS)}.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), required=True, help="Output directory."
)
@click.option(
    "--templates",
    type=click.Path(path_type=Path),
    help="Site template directory; its files override the built-in templates.",
)
@click.option("--force", is_flag=True, help="Replace output directories not made by render.")
@click.option(
    "--runtime",
    type=click.Choice(list(CONTAINER_RUNTIMES)),
    help="Runtime of the module wrappers [default: the recipe's modules.runtime].",
)
@click.option(
    "--pin",
    "pin_folder",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A validated build folder (its pin.json): user files name that image, not the tag.",
)
def render_command(
    recipe: str,
    variants: tuple[str, ...],
    only: str | None,
    output: Path,
    templates: Path | None,
    force: bool,
    runtime: str | None,
    pin_folder: Path | None,
) -> None:
    """Render a recipe's variants into OUTPUT/<variant>/ (deterministic)."""
    formats = parse_only(only)
    all_variants = load_variants(recipe)
    chosen = [select_variant(all_variants, v) for v in variants] if variants else all_variants
    if runtime:
        chosen = [with_runtime(v, runtime) for v in chosen]
    if pin_folder is not None:
        chosen = [pinned(v, pin_folder) for v in chosen]
    for variant in chosen:
        if not force:
            refuse_build_folder(output / variant.name)
        path = render_variant(variant, output, formats, templates, force=force)
        console.print(Text(f"rendered {variant.name} -> {path}"))


def refuse_build_folder(folder: Path) -> None:
    """A render replaces its folder: one that holds a build's records (manifest, validation,
    pin, logs) would lose them, and its user files would leave the validated image."""
    from stackbuild.commands.build import BUILD_OUTPUTS

    held = [name for name in BUILD_OUTPUTS if (folder / name).exists()]
    if held:
        raise StackbuildError(
            f"{folder} holds a build ({', '.join(held)}): rendering there would delete "
            "them, and its user files would stop naming the validated image",
            hint=f"render into another directory with -o (add --pin {folder} for user files "
            "that name its validated image), rebuild it with `stackbuild build`, or pass "
            "--force to replace it",
        )


def pinned(variant: Variant, folder: Path) -> Variant:
    """The variant naming the image validated in `folder`; refused for another build."""
    pin = read_pin(folder)
    if pin is None:
        raise StackbuildError(
            f"{folder} has no {PIN_FILE}: nothing was validated there",
            hint=f"validate that build first: stackbuild validate {folder}",
        )
    if pin.recipe_hash != variant.build_digest:
        raise StackbuildError(
            f"{folder} holds a validated build of another recipe state than {variant.name} "
            f"as it is now (build digest {pin.recipe_hash[:12]}, now {variant.build_digest[:12]})",
            hint="build and validate the recipe as it is, then render with --pin",
        )
    return dataclasses.replace(variant, pin=pin)


@click.command("lint")
@click.argument("recipes", nargs=-1)
@click.option(
    "--dir",
    "rendered",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Lint an already rendered directory instead of rendering.",
)
@click.option("--templates", type=click.Path(path_type=Path), help="Site template directory.")
def lint_command(recipes: tuple[str, ...], rendered: Path | None, templates: Path | None) -> None:
    """Render recipes (default: all shipped) and check every file with the real tools."""
    with tempfile.TemporaryDirectory(prefix="stackbuild-lint-") as tmp:
        if rendered is not None:
            root = rendered
        else:
            root = Path(tmp)
            names = list(recipes) or [str(p) for p in shipped_recipes()]
            for name in names:
                for variant in load_variants(name):
                    render_variant(variant, root / Path(name).stem, None, templates)
        checked, findings = lint_tree(root)
        for finding in findings:
            console.print(
                Text(str(finding.path.relative_to(root)) + f": [{finding.tool}] " + finding.message)
            )
    if findings:
        raise StackbuildError(f"lint: {len(findings)} problem(s) in {checked} files")
    console.print(Text(f"lint: {checked} files checked, no problems"))
