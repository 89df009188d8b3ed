"""`python -m validation`: run one workload on this rank, probe the stack, or evaluate runs."""

from __future__ import annotations

import sys

from validation.cli import main

if __name__ == "__main__":
    sys.exit(main())
