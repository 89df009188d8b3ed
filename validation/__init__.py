"""Validation harness: science workloads and checks that run inside images and natively.

This package must stay importable without `stackbuild`: images copy it to
/opt/stackbuild/validation and run `python -m validation`.
"""

from __future__ import annotations

__version__ = "0.1.0"
