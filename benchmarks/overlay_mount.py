"""podman builds on the kernel's overlay vs fuse-overlayfs, side by side in one run.

Why: a store that podman-hpc once opened with its mount program stays on fuse-overlayfs for
every podman call (c/storage's `overlay/.has-mount-program`); scripts/setup.d/20-containers.sh
now puts such a store back. This measures what that costs: the same build (the base image
imported, then RUN steps that write and rewrite files as apt and pip do, and as many
metadata-only steps as a stack's Containerfile has) in two fresh stores, alternating.

Run as root after scripts/setup-host.sh:  .venv/bin/python benchmarks/overlay_mount.py
Writes benchmarks/results/overlay_mount.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "overlay_mount.json"
BASE = "localhost/stackbuild/base:bookworm-minbase"
#: Files written, copied and rewritten like an apt or pip step; 30 metadata steps like the
#: stack's ENV and LABEL lines.
CONTAINERFILE = "\n".join(
    [
        f"FROM {BASE}",
        "RUN mkdir /w && for i in $(seq 1 3000); do head -c 20000 /dev/urandom > /w/f$i; done",
        "RUN cp -a /usr /usr2 && cp -a /w /w2",
        "RUN for f in /w/f*; do cat $f > $f.new && mv $f.new $f; done",
        *[f"LABEL bench.step{i}=v{i}" for i in range(30)],
        "",
    ]
)


def store_conf(root: Path, mount_program: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "storage.conf"
    option = f'mount_program = "{mount_program}"' if mount_program else 'mount_program = ""'
    conf.write_text(
        "[storage]\n"
        'driver = "overlay"\n'
        f'runroot = "{root}/run"\n'
        f'graphroot = "{root}/graph"\n'
        "[storage.options.overlay]\n"
        f"{option}\n"
    )
    return conf


def podman(conf: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)}
    return subprocess.run(["podman", *args], env=env, capture_output=True, check=True)


def build_seconds(conf: Path, context: Path) -> float:
    start = time.monotonic()
    podman(conf, "build", "--no-cache", "--layers", "-t", "localhost/bench/overlay", str(context))
    return round(time.monotonic() - start, 1)


def mounted_with(conf: Path) -> str:
    """The file system type of a container's root in this store (its /proc/mounts)."""
    out = podman(conf, "run", "--rm", BASE, "head", "-n", "1", "/proc/mounts").stdout.decode()
    return out.split()[2] if out.split()[1:2] == ["/"] else out.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="overlay-bench-", dir="/var/tmp"))
    archive = work / "base.tar"
    subprocess.run(
        ["podman", "save", "--format", "docker-archive", "-o", str(archive), BASE],
        capture_output=True,
        check=True,
    )
    context = work / "context"
    context.mkdir()
    (context / "Containerfile").write_text(CONTAINERFILE)
    confs = {
        "kernel": store_conf(work / "kernel", ""),
        "fuse-overlayfs": store_conf(work / "fuse", "/usr/bin/fuse-overlayfs"),
    }
    seconds: dict[str, list[float]] = {name: [] for name in confs}
    try:
        for conf in confs.values():
            (conf.parent / "graph").mkdir(parents=True, exist_ok=True)
            podman(conf, "load", "-i", str(archive))
        drivers = {name: mounted_with(conf) for name, conf in confs.items()}
        for _ in range(args.rounds):
            for name, conf in confs.items():
                seconds[name].append(build_seconds(conf, context))
    finally:
        for conf in confs.values():
            subprocess.run(
                ["podman", "rmi", "-a", "-f"],
                env={**os.environ, "CONTAINERS_STORAGE_CONF": str(conf)},
                capture_output=True,
                check=False,
            )
        shutil.rmtree(work, ignore_errors=True)
    best = {name: min(values) for name, values in seconds.items()}
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "load_average": os.getloadavg(),
        "mounted_with": drivers,
        "build_seconds": seconds,
        "fuse_over_kernel": round(best["fuse-overlayfs"] / best["kernel"], 2),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
