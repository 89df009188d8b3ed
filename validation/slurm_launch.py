"""Make one srun step one distributed job: `slurm_launch.py -- CMD ARGS...` sets what
torch.distributed and Horovod's Gloo controller read from Slurm's task variables, then
execs CMD. The module wrappers put it in front of the command in every srun task.

- torch.distributed: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR (the step's
  first node, where rank 0 runs) and MASTER_PORT (from the job and step ids), so a script
  that calls `init_process_group()` with no arguments works under srun.
- Horovod with Gloo (HOROVOD_CONTROLLER=gloo, or a runtime that cannot pass Slurm's PMI
  socket, Docker): the HOROVOD_* rank layout and a rendezvous server, which rank 0 starts in
  a child process, as horovodrun would. Horovod with MPI needs none of this (PMI does it).

Variables that are already set are kept. Outside an srun step it only execs CMD.
Runs with the image's Python and the standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence

if __package__ in (None, ""):  # run as a script: /opt/stackbuild/validation/slurm_launch.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from validation.launch_env import (
    DEFAULT_MASTER_PORT,
    _slurm_task,
    first_host,
    hostnames,
    slurm_master_port,
)
from validation.runtimes import RUNTIMES

#: Runtimes whose containers cannot receive Slurm's PMI socket: Horovod there uses Gloo.
NO_PMI_RUNTIMES = tuple(name for name, row in RUNTIMES.items() if not row.pmi)
RENDEZVOUS_WAIT_S = 60.0
_SIOCGIFADDR = 0x8915


def slurm_environment(env: Mapping[str, str], hostname: str) -> dict[str, str]:
    """The variables to add for this srun task (none outside srun steps); pure."""
    task = _slurm_task(env)
    if task is None:
        return {}
    rank, world, local_rank, local_world = task
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    master = first_host(nodelist) if nodelist else "127.0.0.1"
    port = slurm_master_port(env) or DEFAULT_MASTER_PORT
    add = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
        "MASTER_ADDR": master,
        "MASTER_PORT": str(port),
    }
    if uses_gloo(env):
        nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1)
        add |= {
            "HOROVOD_CONTROLLER": "gloo",
            "HOROVOD_CPU_OPERATIONS": "gloo",
            "HOROVOD_RANK": str(rank),
            "HOROVOD_SIZE": str(world),
            "HOROVOD_LOCAL_RANK": str(local_rank),
            "HOROVOD_LOCAL_SIZE": str(local_world),
            # Slurm's default block distribution: node n holds ranks n*local_world...
            "HOROVOD_CROSS_RANK": env.get("SLURM_NODEID", "0"),
            "HOROVOD_CROSS_SIZE": str(nodes),
            "HOROVOD_HOSTNAME": env.get("SLURMD_NODENAME", hostname),
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": master,
            "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port + 1),
        }
    return {k: v for k, v in add.items() if k not in env}


def uses_gloo(env: Mapping[str, str]) -> bool:
    """Horovod's Gloo controller: asked for, or the only one a PMI-less runtime can use."""
    controller = env.get("HOROVOD_CONTROLLER", "").lower()
    if controller:
        return controller == "gloo"
    return env.get("STACKBUILD_RUNTIME", "") in NO_PMI_RUNTIMES


def interface_for(address: str) -> str | None:
    """The network interface this host reaches `address` through (for HOROVOD_GLOO_IFACE)."""
    try:
        target = socket.gethostbyname(address)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((target, 9))  # UDP: picks the route, sends nothing
            local = probe.getsockname()[0]
    except OSError:
        return None
    for _, name in socket.if_nameindex():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, contextlib.suppress(OSError):
            packed = struct.pack("256s", name.encode()[:15])
            raw = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, packed)
            if socket.inet_ntoa(raw[20:24]) == local:
                return name
    return None


def _rendezvous_plan(env: Mapping[str, str]) -> list[object]:
    """Horovod's SlotInfo per rank, from Slurm's block layout: the scope sizes its server
    uses to clear a finished rendezvous (empty where the node list cannot be read)."""
    from horovod.runner.common.util.hosts import SlotInfo

    world, local_world = int(env["HOROVOD_SIZE"]), int(env["HOROVOD_LOCAL_SIZE"])
    nodes = hostnames(env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "")
    if len(nodes) * local_world != world:
        return []  # an uneven layout: the server then clears scopes key by key
    return [
        SlotInfo(
            hostname=nodes[r // local_world],
            rank=r,
            local_rank=r % local_world,
            cross_rank=r // local_world,
            size=world,
            local_size=local_world,
            cross_size=len(nodes),
        )
        for r in range(world)
    ]


def serve_rendezvous(port: int, parent: int, env: Mapping[str, str]) -> None:
    """Rank 0's child: Horovod's Gloo rendezvous server, until the rank's process ends."""
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    server = RendezvousHTTPServer(("0.0.0.0", port), RendezvousHandler, 0)
    server.init(_rendezvous_plan(env))
    server.timeout = 1.0
    while os.getppid() == parent:  # the rank exec'd into CMD keeps this PID
        server.handle_request()


def _start_rendezvous(env: MutableMapping[str, str]) -> None:
    """Fork the rendezvous server on rank 0 and wait until it listens."""
    port = int(env["HOROVOD_GLOO_RENDEZVOUS_PORT"])
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        try:
            os.setsid()
            serve_rendezvous(port, parent, env)
        finally:
            os._exit(0)
    deadline = time.monotonic() + RENDEZVOUS_WAIT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        if os.waitpid(child, os.WNOHANG) != (0, 0):
            break
        time.sleep(0.1)
    raise SystemExit(
        f"slurm_launch: Horovod's Gloo rendezvous server did not start on port {port}; "
        "is the port taken (another step of this job on the node)? Set "
        "HOROVOD_GLOO_RENDEZVOUS_PORT to a free port"
    )


def main(argv: Sequence[str]) -> int:
    """slurm_launch.py [--] CMD ARGS...: set the job's variables, then exec CMD."""
    args = list(argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: slurm_launch.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    env = os.environ
    added = slurm_environment(env, socket.gethostname())
    env.update(added)
    if "HOROVOD_GLOO_RENDEZVOUS_ADDR" in added and "HOROVOD_GLOO_IFACE" not in env:
        iface = interface_for(env["HOROVOD_GLOO_RENDEZVOUS_ADDR"])
        if iface:
            env["HOROVOD_GLOO_IFACE"] = iface
    if "HOROVOD_GLOO_RENDEZVOUS_PORT" in added and env.get("HOROVOD_RANK") == "0":
        _start_rendezvous(env)
    if env.get("STACKBUILD_RUNTIME", "") in NO_PMI_RUNTIMES:
        for name in [n for n in env if n.startswith("PMI_")]:
            del env[name]  # its socket is not in this container: MPI_Init must not try it
    try:
        os.execvp(args[0], args)
    except OSError as exc:
        print(f"slurm_launch: cannot run {args[0]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
