"""`stackbuild lint` where pip installed stackbuild without its `lint` extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stackbuild.errors import ToolError
from stackbuild.lint import lint_containerfile


def test_lint_without_the_dockerfile_package_says_which_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    containerfile = tmp_path / "Containerfile"
    containerfile.write_text("FROM scratch\n")
    monkeypatch.setitem(sys.modules, "dockerfile", None)  # makes `import dockerfile` fail
    with pytest.raises(ToolError, match="'dockerfile' package") as info:
        lint_containerfile(containerfile)
    assert "stackbuild[lint]" in str(info.value)
