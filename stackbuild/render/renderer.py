"""Write a variant's files into OUT/<variant>/, atomically and without clobbering foreign files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from stackbuild.errors import StackbuildError
from stackbuild.recipe.matrix import Variant
from stackbuild.render.environment import make_environment
from stackbuild.render.pin import ImagePin
from stackbuild.render.writers import WRITERS, RenderedFile, check_formats

MARKER = ".stackbuild-render"
#: What a render was made from, so that validate and publish can render the user files again.
RENDER_FILE = "render.json"
#: The formats users run (their folders in a variant directory); a pin re-renders these.
USER_FORMATS = {"modules": ("modulefiles", "wrappers"), "jobs": ("jobs",)}


def render_files(
    variant: Variant, formats: list[str] | None = None, site_templates: Path | None = None
) -> list[RenderedFile]:
    """All files of the chosen formats for one variant, in a stable order."""
    env = make_environment(site_templates)
    files: list[RenderedFile] = []
    for name in check_formats(formats or list(WRITERS)):
        files.extend(WRITERS[name](variant, env))
    return sorted(files, key=lambda f: f.path)


def render_variant(
    variant: Variant,
    out_root: Path,
    formats: list[str] | None = None,
    site_templates: Path | None = None,
    force: bool = False,
    keep: tuple[str, ...] = (),
) -> Path:
    """Render into out_root/<variant name>; replaces an earlier render, never a foreign dir.

    keep: names in an earlier render's directory to carry over (a build's manifest, logs
    and validation record, which a re-render must not lose).
    """
    files = render_files(variant, formats, site_templates)
    target = out_root / variant.name
    if target.exists() and not (target / MARKER).exists() and any(target.iterdir()) and not force:
        raise StackbuildError(
            f"{target} exists and was not written by `stackbuild render`",
            hint="choose another output directory with -o, or pass --force to replace it",
        )
    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{variant.name}.", dir=out_root))
    try:
        for item in files:
            path = staging / item.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(item.content)
            os.chmod(path, 0o755 if item.executable else 0o644)
        (staging / MARKER).write_text(f"{variant.recipe_name} {variant.name}\n")
        (staging / RENDER_FILE).write_text(_render_record(variant, site_templates))
        os.chmod(staging, 0o755)
        if target.exists():
            for name in keep:
                if (target / name).exists() and not (staging / name).exists():
                    (target / name).rename(staging / name)
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _render_record(variant: Variant, site_templates: Path | None) -> str:
    record = {
        "recipe_file": str(variant.recipe_path.resolve()),
        "variant": variant.name,
        "recipe_hash": variant.build_digest,
        "templates": str(site_templates.resolve()) if site_templates else None,
    }
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def rerender_user_files(folder: Path, pin: ImagePin) -> str:
    """Render the user files in a build folder again, naming `pin`; returns what happened.

    The variant comes from the recipe the folder was rendered from (render.json); if that
    recipe changed since the validated build, nothing is rewritten and the message says how
    to render pinned files by hand.
    """
    from stackbuild.recipe import expand_matrix, load_recipe, select_variant

    try:
        record = json.loads((folder / RENDER_FILE).read_text(encoding="utf-8"))
        recipe, name = Path(record["recipe_file"]), record["variant"]
        templates = Path(record["templates"]) if record.get("templates") else None
    except (OSError, ValueError, KeyError, TypeError):
        return f"user files in {folder} not re-rendered: it has no readable {RENDER_FILE}"
    by_hand = f"render them with `stackbuild render {recipe} -v {name} --pin {folder}`"
    if not recipe.is_file():
        return f"user files in {folder} not re-rendered: {recipe} is gone; {by_hand}"
    variant = select_variant(expand_matrix(load_recipe(recipe)), name)
    if variant.build_digest != pin.recipe_hash:
        return (
            f"user files in {folder} not re-rendered: {recipe} changed since the validated "
            f"build; they keep naming what they named. Rebuild and validate, or {by_hand}"
        )
    files = render_files(dataclasses.replace(variant, pin=pin), list(USER_FORMATS), templates)
    staging = Path(tempfile.mkdtemp(prefix=".pin.", dir=folder))
    try:
        for item in files:
            path = staging / item.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(item.content)
            os.chmod(path, 0o755 if item.executable else 0o644)
        for top in (d for dirs in USER_FORMATS.values() for d in dirs):
            old = folder / top
            if old.exists():
                old.rename(staging / f".old-{top}")
            if (staging / top).exists():
                (staging / top).rename(old)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"user files in {folder} now name {pin.reference} (validated {pin.image_id[:19]})"
