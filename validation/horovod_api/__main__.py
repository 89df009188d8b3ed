"""python -m validation.horovod_api --framework tensorflow|torch (under a 2+ rank launcher).

Exit status: 0 when every check passed (unsupported APIs raising the error that names them
count as passed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

from validation.horovod_api.results import Checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=("tensorflow", "torch"), required=True)
    parser.add_argument("--only", default="", help="comma-separated families (default: all)")
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if args.framework == "tensorflow":
        from validation.horovod_api import tensorflow_api as api
    else:
        from validation.horovod_api import torch_api as api  # type: ignore[no-redef]
    checks, controller = api.run(lambda rank, size: Checks(args.framework, rank, size), only)
    if checks.size < 2:
        print("horovod_api: needs 2 or more ranks", file=sys.stderr)
        return 1
    return 0 if checks.summary(controller) else 1


if __name__ == "__main__":
    sys.exit(main())
