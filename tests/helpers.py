"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import shutil

import pytest


def needs_tool(*names: str) -> pytest.MarkDecorator:
    """Skip unless every tool is installed (scripts/setup-host.sh installs them)."""
    missing = [n for n in names if shutil.which(n) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")
