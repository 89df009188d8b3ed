"""Rendering: Variants to build contexts, Apptainer definitions, module files and job scripts."""

from stackbuild.render.renderer import render_variant

__all__ = ["render_variant"]
