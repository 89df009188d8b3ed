"""Build step: a wheel carries copies of recipes/, templates/, validation/ and examples/.

They land in stackbuild/_shipped/, where stackbuild/resources.py finds them when stackbuild
runs from an installed wheel; everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent
#: Must match stackbuild.resources.SHIPPED_FOLDERS (tests/test_wheel.py checks the wheel).
SHIPPED_FOLDERS = ("recipes", "templates", "validation", "examples")


class BuildWithShippedFolders(build_py):
    """build_py, then copy the shipped folders into the build's stackbuild/_shipped/."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders directly
            return
        target = Path(self.build_lib) / "stackbuild" / "_shipped"
        shutil.rmtree(target, ignore_errors=True)
        for name in SHIPPED_FOLDERS:
            shutil.copytree(
                SOURCE / name,
                target / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"),
            )


setup(cmdclass={"build_py": BuildWithShippedFolders})
