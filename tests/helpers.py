"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest


def needs_tool(*names: str) -> pytest.MarkDecorator:
    """Skip unless every tool is installed (scripts/setup-host.sh installs them)."""
    missing = [n for n in names if shutil.which(n) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)}")


#: Images the default test run does not build (the main job does, see README "Tests"), and
#: what each costs cold on 2 cores: STACKBUILD_TEST_IMAGES="tensorflow-cpu pytorch-gpu" (or
#: "all") adds them to the run.
OPT_IN_IMAGES = {
    "tensorflow-cpu": "the TensorFlow CPU image (about 10 minutes cold: build, checks, validation)",
    "pytorch-gpu": "the pytorch-gpu build (CUDA 13 wheels, nvcc: 10-20 minutes cold)",
}


def opt_in_image(variant: str) -> pytest.MarkDecorator:
    """Skip, saying how to run it, unless STACKBUILD_TEST_IMAGES names `variant` (or all)."""
    wanted = os.environ.get("STACKBUILD_TEST_IMAGES", "").replace(",", " ").split()
    chosen = variant in wanted or "all" in wanted
    reason = (
        f"{OPT_IN_IMAGES[variant]} is out of the default run to keep cold CI under 60 "
        f"minutes: STACKBUILD_TEST_IMAGES={variant} runs it (the main job builds it)"
    )
    return pytest.mark.skipif(not chosen, reason=reason)


def variant_params(*variants: str) -> list[Any]:
    """pytest params for image variants, the opt-in ones marked (opt_in_image)."""
    return [pytest.param(v, marks=opt_in_image(v)) if v in OPT_IN_IMAGES else v for v in variants]
