"""Write a variant's files into OUT/<variant>/, atomically and without clobbering foreign files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from stackbuild.errors import StackbuildError
from stackbuild.recipe.matrix import Variant
from stackbuild.render.environment import make_environment
from stackbuild.render.writers import WRITERS, RenderedFile, check_formats

MARKER = ".stackbuild-render"


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
