"""The Horovod 0.28.1 patches apply cleanly to the PyPI sdist.

The sdist is taken from (first hit wins):
  1. the file named by $STACKBUILD_HOROVOD_SDIST,
  2. the stackbuild cache ($STACKBUILD_CACHE or ~/.cache/stackbuild, in horovod-sdist/),
  3. `pip download --no-deps --no-binary :all: horovod==0.28.1` into that cache.
The tests skip, with the reason, when none of these gives an sdist or `patch` is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from stackbuild.build.hostconfig import cache_dir as cache_dir_root
from stackbuild.recipe import expand_matrix, load_recipe
from stackbuild.recipe.catalog import shipped_recipes

HOROVOD_VERSION = "0.28.1"
SDIST_NAME = f"horovod-{HOROVOD_VERSION}.tar.gz"
REPO_ROOT = Path(__file__).resolve().parents[2]
PATCH_DIR = REPO_ROOT / "recipes" / "patches" / "horovod" / HOROVOD_VERSION
PATCHES = sorted(PATCH_DIR.glob("[0-9][0-9][0-9][0-9]-*.patch"))


def _fetch_sdist(cache_dir: Path) -> tuple[Path | None, str]:
    override = os.environ.get("STACKBUILD_HOROVOD_SDIST")
    if override:
        path = Path(override)
        return (path, "") if path.is_file() else (None, f"$STACKBUILD_HOROVOD_SDIST={path} missing")
    cached = cache_dir / SDIST_NAME
    if cached.is_file():
        return cached, ""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(cache_dir),
        f"horovod=={HOROVOD_VERSION}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"pip download of horovod {HOROVOD_VERSION} sdist failed: {exc}"
    if proc.returncode != 0 or not cached.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return (
            None,
            f"cannot fetch horovod {HOROVOD_VERSION} sdist (pip rc={proc.returncode}): {tail}",
        )
    return cached, ""


@pytest.fixture(scope="module")
def sdist() -> Path:
    cache_dir = cache_dir_root() / "horovod-sdist"
    cache_dir.mkdir(parents=True, exist_ok=True)
    path, reason = _fetch_sdist(cache_dir)
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture
def source_tree(sdist: Path, tmp_path: Path) -> Path:
    if shutil.which("patch") is None:
        pytest.skip("GNU patch is not installed")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / f"horovod-{HOROVOD_VERSION}"
    assert (root / "setup.py").is_file(), f"unexpected sdist layout in {sdist}"
    return root


def _patch(root: Path, patch_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["patch", "-p1", "--batch", "--forward", *extra, "-i", str(patch_file)],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def test_patches_exist() -> None:
    assert PATCHES, f"no NNNN-*.patch files in {PATCH_DIR}"
    assert (PATCH_DIR / "README.md").is_file()


@pytest.mark.parametrize("patch_file", PATCHES, ids=[p.name for p in PATCHES])
def test_patch_has_header_comment(patch_file: Path) -> None:
    header = patch_file.read_text().split("\n--- ", 1)[0]
    assert header.strip(), f"{patch_file.name} has no header comment before the diff"


@pytest.mark.parametrize("patch_file", PATCHES, ids=[p.name for p in PATCHES])
def test_patch_applies_cleanly(source_tree: Path, patch_file: Path) -> None:
    proc = _patch(source_tree, patch_file, "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.lower()
    assert "fuzz" not in out and "offset" not in out, proc.stdout


def test_patches_apply_in_order(source_tree: Path) -> None:
    for patch_file in PATCHES:
        proc = _patch(source_tree, patch_file)
        assert proc.returncode == 0, f"{patch_file.name}:\n{proc.stdout}{proc.stderr}"
    assert not list(source_tree.rglob("*.rej")), "rejected hunks left behind"


@pytest.mark.parametrize("recipe", shipped_recipes(), ids=lambda p: p.stem)
def test_every_shipped_recipe_applies_all_patches_in_order(recipe: Path) -> None:
    for variant in expand_matrix(load_recipe(recipe)):
        if variant.settings.horovod.version == HOROVOD_VERSION:
            assert [p.resolve() for p in variant.patch_files] == [p.resolve() for p in PATCHES]
