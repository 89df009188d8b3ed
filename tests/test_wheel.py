"""The wheel a user gets from `pip install stackbuild`: its dependencies, data and commands.

Builds the wheel from a copy of this checkout, installs it into a fresh venv (no system
site-packages, so a missing dependency shows), and runs the CLI from a folder outside the
checkout, comparing every render with the checkout's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from stackbuild.resources import SHIPPED_FOLDERS

pytestmark = pytest.mark.wheel

CHECKOUT = Path(__file__).resolve().parents[1]
SHIPPED_RECIPES = sorted(p.stem for p in (CHECKOUT / "recipes").glob("*.yaml"))


@dataclass(frozen=True)
class InstalledWheel:
    """A wheel built from the checkout and installed into its own venv."""

    wheel: Path
    venv: Path
    workdir: Path
    source: Path  # the copy of the checkout the wheel was built from

    @property
    def stackbuild(self) -> str:
        return str(self.venv / "bin" / "stackbuild")


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that points back into the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STACKBUILD_", "PYTHON"))}
    env.pop("VIRTUAL_ENV", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited {result.returncode}\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )
    return result


def _copy_source(dest: Path) -> None:
    """The checkout's files as a fresh clone plus uncommitted work would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=CHECKOUT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        source = CHECKOUT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> InstalledWheel:
    """Build the wheel (no deps) from a copy of the checkout; pip-install it into a new venv."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the checkout's files")
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    _copy_source(source)
    dist = root / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run([*pip_wheel, "-w", str(dist), str(source)], cwd=root)
    (wheel,) = dist.glob("stackbuild-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=root)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[lint]"], cwd=root)
    workdir = root / "work"
    workdir.mkdir()
    return InstalledWheel(wheel, venv, workdir, source)


def test_the_wheel_holds_recipes_patches_templates_and_the_harness(
    installed: InstalledWheel,
) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for folder in SHIPPED_FOLDERS:
        for path in sorted((CHECKOUT / folder).rglob("*")):
            rel = path.relative_to(CHECKOUT).as_posix()
            if path.is_file() and "__pycache__" not in path.parts:
                assert f"stackbuild/_shipped/{rel}" in names, rel
    assert any(n.startswith("stackbuild/_shipped/recipes/patches/horovod/") for n in names)
    # Nothing lands at the top of site-packages besides the two packages.
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"stackbuild", "validation"}


def test_the_tool_runs_without_numpy_or_the_frameworks(installed: InstalledWheel) -> None:
    python = str(installed.venv / "bin" / "python")
    heavy = ("numpy", "torch", "tensorflow")
    probe = f"import importlib.util as u; print([m for m in {heavy!r} if u.find_spec(m)])"
    assert _run([python, "-c", probe], installed.workdir).stdout.strip() == "[]"
    out = _run([installed.stackbuild, "--help"], installed.workdir).stdout
    for command in ("list", "show", "render", "lint", "build", "publish", "validate"):
        assert command in out


def test_list_shows_every_shipped_recipe(installed: InstalledWheel) -> None:
    out = _run([installed.stackbuild, "list", "--json"], installed.workdir).stdout
    listed = {row["recipe"] for row in json.loads(out)}
    assert listed == set(SHIPPED_RECIPES)
    assert SHIPPED_RECIPES  # the checkout has recipes, so the comparison means something


def test_show_finds_a_shipped_variant(installed: InstalledWheel) -> None:
    out = _run([installed.stackbuild, "show", "pytorch-cpu"], installed.workdir).stdout
    assert "pytorch-cpu" in out


def _tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), os.access(p, os.X_OK))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("recipe", SHIPPED_RECIPES)
def test_rendering_from_the_wheel_matches_the_checkout_byte_for_byte(
    installed: InstalledWheel, recipe: str, tmp_path: Path
) -> None:
    from_wheel = tmp_path / "wheel"
    _run([installed.stackbuild, "render", recipe, "-o", str(from_wheel)], installed.workdir)
    # The checkout's side runs from the copy the wheel was built from, so that work others
    # save meanwhile in this checkout cannot make the two differ.
    from_checkout = tmp_path / "checkout"
    where = "import stackbuild; print(stackbuild.__file__)"
    found = _run([sys.executable, "-c", where], installed.source).stdout
    assert found.strip() == str(installed.source / "stackbuild" / "__init__.py")
    _run(
        [sys.executable, "-m", "stackbuild.cli", "render", recipe, "-o", str(from_checkout)],
        installed.source,
    )
    wheel_tree, checkout_tree = _tree(from_wheel), _tree(from_checkout)
    assert any(p.endswith("/Containerfile") for p in wheel_tree)
    assert any("/files/horovod/patches/" in p for p in wheel_tree)
    assert any("/files/validation/" in p for p in wheel_tree)
    assert sorted(wheel_tree) == sorted(checkout_tree)
    # render.json records where the recipe file was (the wheel's copy, the checkout's):
    # that path differs by design; what it says about the variant must not.
    records = [p for p in wheel_tree if p.endswith("/render.json")]
    assert records
    for path in records:
        ours, theirs = json.loads(wheel_tree[path][0]), json.loads(checkout_tree[path][0])
        assert ours.pop("recipe_file") != theirs.pop("recipe_file")
        assert ours == theirs
    differing = [p for p in wheel_tree if wheel_tree[p] != checkout_tree[p] and p not in records]
    assert differing == []


def test_lint_passes_from_the_wheel(installed: InstalledWheel) -> None:
    missing = [t for t in ("shellcheck", "luac5.4") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"lint's host tools are not installed: {', '.join(missing)}")
    out = _run([installed.stackbuild, "lint"], installed.workdir).stdout
    assert "no problems" in out
