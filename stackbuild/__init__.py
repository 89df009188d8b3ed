"""stackbuild: recipes to tested deep-learning container stacks for HPC centers."""

from pathlib import Path

__version__ = "0.1.0"

#: The checkout (or installed tree) holding recipes/, templates/ and validation/.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
