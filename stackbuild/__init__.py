"""stackbuild: recipes to tested deep-learning container stacks for HPC centers."""

from stackbuild.resources import resource_root

__version__ = "0.1.0"

#: The checkout, or the wheel's copy, holding recipes/, templates/ and validation/.
PROJECT_ROOT = resource_root()
