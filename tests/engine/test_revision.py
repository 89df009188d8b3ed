"""The source revision an image's label carries: git commit, '-dirty', or 'none' (real git)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stackbuild.build.manifest import source_revision

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with a committed recipe folder, an ignored out/ and another file."""
    root = tmp_path / "site"
    (root / "recipes" / "patches").mkdir(parents=True)
    (root / "recipes" / "cpu.yaml").write_text("name: cpu\n")
    (root / "recipes" / "patches" / "fix.patch").write_text("--- a\n+++ b\n")
    (root / "README").write_text("site recipes\n")
    (root / ".gitignore").write_text("/out/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "recipes")
    return root


def test_a_clean_recipe_folder_gives_the_commit(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert len(head) == 40
    assert source_revision(repo / "recipes") == head


def test_a_changed_recipe_is_dirty(repo: Path) -> None:
    (repo / "recipes" / "cpu.yaml").write_text("name: cpu\nchanged: true\n")
    assert source_revision(repo / "recipes") == git(repo, "rev-parse", "HEAD") + "-dirty"


def test_a_staged_or_untracked_file_under_the_recipes_is_dirty(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    (repo / "recipes" / "patches" / "new.patch").write_text("new\n")
    assert source_revision(repo / "recipes") == f"{head}-dirty"
    git(repo, "add", "recipes/patches/new.patch")
    assert source_revision(repo / "recipes") == f"{head}-dirty"


def test_a_deleted_patch_is_dirty(repo: Path) -> None:
    (repo / "recipes" / "patches" / "fix.patch").unlink()
    assert source_revision(repo / "recipes").endswith("-dirty")


def test_changes_outside_the_recipe_folder_do_not_count(repo: Path) -> None:
    (repo / "README").write_text("edited\n")
    (repo / "notes.txt").write_text("untracked\n")
    assert source_revision(repo / "recipes") == git(repo, "rev-parse", "HEAD")


def test_a_later_commit_is_named(repo: Path) -> None:
    first = source_revision(repo / "recipes")
    (repo / "recipes" / "cpu.yaml").write_text("name: cpu\nv: 2\n")
    git(repo, "commit", "-q", "-am", "v2")
    second = source_revision(repo / "recipes")
    assert second != first and second == git(repo, "rev-parse", "HEAD")


def test_an_ignored_rendered_context_is_dirty_only_when_ignored_files_count(repo: Path) -> None:
    context = repo / "out" / "cpu" / "pytorch-cpu"
    context.mkdir(parents=True)
    (context / "Containerfile").write_text("FROM scratch\n")
    head = git(repo, "rev-parse", "HEAD")
    assert source_revision(context, count_ignored=True) == f"{head}-dirty"
    assert source_revision(context) == head


def test_outside_a_git_repository_the_revision_is_none(tmp_path: Path) -> None:
    folder = tmp_path / "loose" / "recipes"
    folder.mkdir(parents=True)
    (folder / "cpu.yaml").write_text("name: cpu\n")
    outside = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True
    )
    assert outside.returncode != 0, "tmp_path must not lie inside a git work tree"
    assert source_revision(folder) == "none"


def test_a_repository_without_a_commit_is_none(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "cpu.yaml").write_text("name: cpu\n")
    assert source_revision(tmp_path) == "none"


@pytest.mark.parametrize("recipe", ["cpu", "gpu", "knl"])
def test_the_revision_arg_follows_every_run_step_so_a_new_commit_keeps_the_cache(
    recipe: str,
) -> None:
    # An ARG's value is part of the cache key of every later RUN (podman and buildah): a
    # revision that changes with each commit must come after the last one.
    from stackbuild.commands.recipes import load_variants
    from stackbuild.render.renderer import render_files

    for variant in load_variants(recipe):
        (containerfile,) = [
            f for f in render_files(variant, ["containerfile"]) if f.path == "Containerfile"
        ]
        runtime = containerfile.content.decode().split(" AS runtime\n", 1)[1]
        before, sep, after = runtime.partition("\nARG SOURCE_REVISION\n")
        assert sep, f"{variant.name}: the runtime stage declares no SOURCE_REVISION"
        assert "\nRUN " in before
        assert "\nRUN " not in after, f"{variant.name}: a RUN step follows ARG SOURCE_REVISION"
        assert "LABEL org.opencontainers.image.revision=${SOURCE_REVISION}" in after


def test_building_a_recipe_passes_the_revision_of_the_recipes_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the engine step is replaced (it would build the CPU stack): it receives the value.
    import stackbuild.commands.build as build_commands
    from stackbuild.cli import main

    site = tmp_path / "site"
    shutil.copytree(Path(__file__).resolve().parents[2] / "recipes", site / "recipes")
    git(site, "init", "-q")
    git(site, "add", ".")
    git(site, "commit", "-q", "-m", "recipes")
    head = git(site, "rev-parse", "HEAD")
    seen: list[str] = []

    def record(context: Path, engine: object, out: object, verbose: bool, *, revision: str) -> None:
        assert (context / "Containerfile").is_file()
        seen.append(revision)

    monkeypatch.setattr(build_commands, "build_context", record)
    argv = ["build", str(site / "recipes" / "cpu.yaml"), "-V", "pytorch-cpu"]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    (site / "recipes" / "cpu.yaml").write_text(
        (site / "recipes" / "cpu.yaml").read_text() + "\n# local change\n"
    )
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    assert seen == [head, f"{head}-dirty"]
