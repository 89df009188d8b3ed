"""The two-node Slurm cluster of scripts/setup.d/55-slurm-two-nodes.sh, for tests.

Two slurmd "nodes" (sb2n1, sb2n2), each in a network namespace of its own behind the bridge
sb2br0 (10.77.0.0/24), and a controller on the host at 10.77.0.1: every command here talks
to it through SLURM_CONF, never to the one-node cluster of 50-slurm.sh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

CONF = Path("/etc/slurm-two/slurm.conf")
NODES = ("sb2n1", "sb2n2")
ADDRESSES = {"sb2n1": "10.77.0.11", "sb2n2": "10.77.0.12"}
SETUP = "scripts/setup.d/55-slurm-two-nodes.sh"
#: Node states in which a node takes (or runs) jobs.
READY_STATES = ("idle", "mixed", "allocated", "completing")


def environment() -> dict[str, str]:
    """This process's environment for the second cluster: SLURM_CONF set, and no SLURM_*
    variables of a job the tests may run in (srun would take them for its own job's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = str(CONF)
    return env


def unusable() -> str:
    """Why the two-node cluster cannot take jobs now ("" when it can)."""
    if shutil.which("sbatch") is None:
        return "Slurm not installed (scripts/setup-host.sh installs it)"
    if not CONF.exists():
        return f"two-node Slurm not set up: {CONF} missing; run {SETUP} (as root)"
    env = environment()
    ping = subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"two-node Slurm controller not answering: run {SETUP} (as root)"
    states = subprocess.run(
        ["sinfo", "--noheader", "--Node", "--format=%N %T"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    ).stdout.split()
    state = dict(zip(states[::2], (s.rstrip("*~#") for s in states[1::2]), strict=False))
    down = [f"{n} {state.get(n, 'missing')}" for n in NODES if state.get(n) not in READY_STATES]
    if down:
        return f"two-node Slurm nodes not ready ({', '.join(down)}): run {SETUP} (as root)"
    return ""


def run(args: list[str], cwd: Path | None = None, timeout: float = 300) -> str:
    """Run a Slurm client command (srun, sbatch...) against the two-node cluster; its
    stdout, or an AssertionError with its output."""
    proc = subprocess.run(
        args,
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environment(),
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout
