"""`stackbuild kernels install`: rendered kernel specs into a user's or a site's Jupyter."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import click

from stackbuild.errors import StackbuildError
from stackbuild.render.kernels import VARIANT_DIR


def user_data_dir() -> Path:
    """Jupyter's per-user data directory, as jupyter_core finds it on Linux."""
    if os.environ.get("JUPYTER_DATA_DIR"):
        return Path(os.environ["JUPYTER_DATA_DIR"])
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "jupyter"


def find_specs(folder: Path) -> list[Path]:
    """kernels/*/kernel.json of a variant directory, or of every variant under a render dir."""
    specs = sorted(folder.glob("kernels/*/kernel.json")) + sorted(
        folder.glob("*/kernels/*/kernel.json")
    )
    if not specs:
        raise StackbuildError(
            f"{folder} holds no kernel spec (kernels/<name>/kernel.json)",
            hint="pass a folder that `stackbuild render` or `stackbuild build` wrote, from a "
            "recipe with `jupyter: {kernel: true}` (the default)",
        )
    return specs


def install_spec(spec_file: Path, kernels_dir: Path) -> Path:
    """Write one spec with its wrapper's absolute path into kernels_dir/<name>/."""
    variant_dir = spec_file.parent.parent.parent.resolve()
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    spec["argv"] = [
        arg.replace(VARIANT_DIR, str(variant_dir), 1) if arg.startswith(VARIANT_DIR) else arg
        for arg in spec["argv"]
    ]
    wrapper = variant_dir / spec.get("metadata", {}).get("stackbuild", {}).get("wrapper", "")
    if not (wrapper.is_file() and os.access(wrapper, os.X_OK)):
        raise StackbuildError(
            f"{spec_file}: its wrapper {wrapper} is missing or not executable",
            hint="render the wrappers with the kernels "
            "(stackbuild render ... --only modules,kernels)",
        )
    target = kernels_dir / spec_file.parent.name
    target.mkdir(parents=True, exist_ok=True)
    for item in spec_file.parent.iterdir():
        if item.is_file() and item.name != "kernel.json":
            shutil.copyfile(item, target / item.name)
    (target / "kernel.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    return target


@click.group("kernels")
def kernels_command() -> None:
    """Jupyter kernel specs of rendered variants."""


@kernels_command.command("install")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--user", "for_user", is_flag=True, help="Into your Jupyter data dir (default).")
@click.option(
    "--prefix",
    type=click.Path(file_okay=False, path_type=Path),
    help="Into PREFIX/share/jupyter/kernels (a site's or an environment's Jupyter).",
)
def install_command(folder: Path, for_user: bool, prefix: Path | None) -> None:
    """Install the kernel specs under FOLDER (a variant's or a render's directory)."""
    if for_user and prefix is not None:
        raise StackbuildError("--user and --prefix exclude each other", hint="choose one")
    kernels_dir = (prefix / "share" / "jupyter" if prefix else user_data_dir()) / "kernels"
    for spec in find_specs(folder):
        target = install_spec(spec, kernels_dir)
        display = json.loads((target / "kernel.json").read_text())["display_name"]
        click.echo(f"installed kernel {target.name} ({display}) -> {target}")
