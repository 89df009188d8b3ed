"""Where the built-in recipes, templates and validation harness are: a checkout or a wheel.

The rule: a wheel carries copies of the checkout's `recipes/`, `templates/`, `validation/`
and `examples/` (the notebooks) in `stackbuild/_shipped/` (made by the build step in
setup.py); when that folder exists it is used, else (a checkout, an editable install) the
checkout's own top-level folders are. A site points at its own with `$STACKBUILD_RECIPES`
and `--templates`.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The wheel's copy of the shipped folders (absent in a checkout).
SHIPPED_DIR = PACKAGE_DIR / "_shipped"
#: The folders a wheel ships, by their name in the checkout.
SHIPPED_FOLDERS = ("recipes", "templates", "validation", "examples")


def resource_root() -> Path:
    """The folder holding recipes/, templates/ and validation/: the wheel's copy or the checkout."""
    return SHIPPED_DIR if SHIPPED_DIR.is_dir() else PACKAGE_DIR.parent
