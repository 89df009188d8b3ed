"""validation/ runs on its own: copied to /opt/stackbuild/validation in images, no stackbuild."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import validation

PACKAGE = Path(validation.__file__).resolve().parent


def test_no_module_imports_stackbuild() -> None:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "stackbuild" for n in names), path


def test_python_dash_m_works_from_a_copied_tree(tmp_path: Path) -> None:
    opt = tmp_path / "opt" / "stackbuild"
    shutil.copytree(PACKAGE, opt / "validation", ignore=shutil.ignore_patterns("__pycache__"))
    env = {"PYTHONPATH": str(opt), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "validation", "run", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--suite" in proc.stdout and "--fault" in proc.stdout


def test_bad_arguments_exit_2_with_a_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "validation", "run", "--suite", "bert"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(PACKAGE.parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
