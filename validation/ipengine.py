"""One IPyParallel engine, as an srun task of the `ipengines` job (inside the image).

`python -m validation.ipengine --profile-dir DIR --cluster-id ID [--wait S]` runs ipyparallel's
engine against the controller that `validation.notebook.start_engines` started in the
notebook's kernel: it waits up to S seconds for the controller's connection file (the engines
may be submitted before or after the notebook starts its controller), registers, and serves
`%%px` cells until the notebook shuts the engines down or the controller goes away.

Afterwards the process ends with `os._exit`: an engine that ran Horovod on MPICH must not
call MPI_Finalize at exit, where MPICH 4.0's ch4:ucx can deadlock (pmodels/mpich#6596) and
keep the srun step, and the job, alive for good.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

#: Seconds an engine waits for the controller's connection file by default.
DEFAULT_WAIT_S = 600
#: Heartbeats an engine may miss before it stops (ipyparallel's period is about 3.5 s): an
#: engine whose notebook died ends within about a minute instead of holding its node.
HEARTBEAT_MISSES = 15


def engine_argv(profile_dir: str, cluster_id: str, wait_s: float) -> list[str]:
    """ipengine's arguments for the controller of (profile_dir, cluster_id)."""
    return [
        f"--profile-dir={profile_dir}",
        f"--cluster-id={cluster_id}",
        f"--IPEngine.wait_for_url_file={wait_s}",
        f"--IPEngine.max_heartbeat_misses={HEARTBEAT_MISSES}",
        "--log-level=WARN",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m validation.ipengine", description=__doc__)
    parser.add_argument("--profile-dir", required=True)
    parser.add_argument("--cluster-id", required=True)
    parser.add_argument("--wait", type=float, default=DEFAULT_WAIT_S)
    args = parser.parse_args(argv)
    from ipyparallel.engine.app import IPEngine

    status = 0
    try:
        IPEngine.launch_instance(engine_argv(args.profile_dir, args.cluster_id, args.wait))
    except SystemExit as stop:  # no controller in time, or registration failed
        status = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
    except RuntimeError as error:
        # A shutdown request stops the engine's event loop under ipyparallel's run_sync,
        # which says so with this error: the normal end of an engine.
        if "Event loop stopped before Future completed" not in str(error):
            traceback.print_exc(file=sys.__stderr__)
            status = 1
    # The engine sent sys.stdout/stderr to the controller; these are the task's own.
    sys.__stdout__.flush()
    sys.__stderr__.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
