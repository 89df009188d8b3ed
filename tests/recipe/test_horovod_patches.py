"""The Horovod 0.28.1 patches apply cleanly to the PyPI sdist.

The sdist is taken from (first hit wins):
  1. the file named by $STACKBUILD_HOROVOD_SDIST,
  2. the stackbuild cache ($STACKBUILD_CACHE or ~/.cache/stackbuild, in horovod-sdist/),
  3. `pip download --no-deps --no-binary :all: horovod==0.28.1` into that cache.
The tests skip, with the reason, when none of these gives an sdist or `patch` is missing.
"""

from __future__ import annotations

import os
import re
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
    """On top of the patches before it (later ones may change lines earlier ones added)."""
    for earlier in PATCHES[: PATCHES.index(patch_file)]:
        assert _patch(source_tree, earlier).returncode == 0, earlier.name
    proc = _patch(source_tree, patch_file, "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.lower()
    assert "fuzz" not in out and "offset" not in out, proc.stdout


def test_patches_apply_in_order(source_tree: Path) -> None:
    for patch_file in PATCHES:
        proc = _patch(source_tree, patch_file)
        assert proc.returncode == 0, f"{patch_file.name}:\n{proc.stdout}{proc.stderr}"
    assert not list(source_tree.rglob("*.rej")), "rejected hunks left behind"


#: Patches only the GPU build needs (TensorFlow's GPU stream and XLA APIs); every recipe
#: applies all the others, in order: the CPU, KNL and GPU images have the same Horovod API.
GPU_ONLY = {"0008-tf-gpu-stream-handle.patch", "0009-tf-xla-absl-statusor.patch"}
API_PATCHES = [p for p in PATCHES if p.name[:4] >= "0010"]


@pytest.mark.parametrize("recipe", shipped_recipes(), ids=lambda p: p.stem)
def test_every_shipped_recipe_applies_all_patches_in_order(recipe: Path) -> None:
    checked = 0
    for variant in expand_matrix(load_recipe(recipe)):
        if variant.settings.horovod.version != HOROVOD_VERSION:
            continue
        applied = [p.resolve() for p in variant.patch_files]
        gpu = any(p.name in GPU_ONLY for p in applied)
        wanted = [p.resolve() for p in PATCHES if gpu or p.name not in GPU_ONLY]
        assert applied == wanted, variant.name
        checked += 1
    assert checked, f"{recipe.name} has no Horovod {HOROVOD_VERSION} variant"


def test_the_api_patches_are_the_audited_ones() -> None:
    """API.md's audit names every API patch, and every patch it names exists."""
    audit = (PATCH_DIR / "API.md").read_text()
    assert API_PATCHES
    for patch in API_PATCHES:
        assert patch.name[:4] in audit, f"{patch.name} is not in API.md's audit"
    named = set(re.findall(r"\b(00[0-9]{2})\b", audit))
    assert named <= {p.name[:4] for p in PATCHES}, named


def _source_after_patches(root: Path) -> Path:
    for patch_file in PATCHES:
        assert _patch(root, patch_file).returncode == 0, patch_file.name
    return root / "horovod"


def test_unsupported_apis_name_themselves_in_their_error(source_tree: Path) -> None:
    """Adasum without MPI raises an error that names the API and what to do (0015)."""
    tree = _source_after_patches(source_tree)
    tf_src = (tree / "tensorflow" / "__init__.py").read_text()
    torch_src = (tree / "torch" / "mpi_ops.py").read_text()
    for api in ("horovod.tensorflow.allreduce", "horovod.tensorflow.grouped_allreduce"):
        assert f"_check_adasum_controller(op, '{api}')" in tf_src
    for api in ("horovod.torch.allreduce", "horovod.torch.grouped_allreduce"):
        assert f"_check_adasum_controller('{api}')" in torch_src
    assert "horovodrun --mpi or mpirun" in tf_src and "horovodrun --mpi or mpirun" in torch_src


def test_patched_python_sources_compile(source_tree: Path) -> None:
    """Every Python file the patches touch still compiles (a bad hunk fails here, fast)."""
    tree = _source_after_patches(source_tree)
    touched = {
        line.split()[1].removeprefix("b/")
        for patch in PATCHES
        for line in patch.read_text().splitlines()
        if line.startswith("+++ ") and line.split()[1].endswith(".py")
    }
    assert touched
    for rel in sorted(touched):
        path = tree.parent / rel
        compile(path.read_text(), str(path), "exec")
