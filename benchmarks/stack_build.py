"""Benchmark a real stack image: cold build, cached rebuild, size, squashfs export.

Run as root after a first `stackbuild build cpu -V VARIANT -o out/cpu` (the cold build,
whose duration its manifest records):
    .venv/bin/python benchmarks/stack_build.py [VARIANT ...]
Writes benchmarks/results/stack_build.json. The cached rebuild renders the same recipe into
a temporary directory and builds it again: every layer, the Horovod compile included, must
come from the cache. The machine is shared, so the load average is recorded next to times.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "stack_build.json"
STACKBUILD = str(ROOT / ".venv" / "bin" / "stackbuild")


def run(*args: str) -> float:
    """Seconds one stackbuild command takes; raises if it fails."""
    start = time.monotonic()
    subprocess.run([STACKBUILD, *args], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return round(time.monotonic() - start, 1)


def measure(variant: str) -> dict[str, Any]:
    """The numbers for one variant of recipes/cpu.yaml."""
    build_dir = ROOT / "out" / "cpu" / variant
    manifest = json.loads((build_dir / "manifest.json").read_text())
    wheels = sorted((ROOT / ".cache" / "wheels").glob("horovod-*/horovod-*.whl"))
    with tempfile.TemporaryDirectory(prefix="stack-bench-") as tmp:
        load = os.getloadavg()[0]
        rebuild_s = run("build", "cpu", "--variant", variant, "--output", tmp)
        rebuilt = json.loads((Path(tmp) / variant / "manifest.json").read_text())
        sqsh = Path(tmp) / f"{variant}.sqsh"
        export_s = run("export", str(build_dir), "--to", "squashfs", "--output", str(sqsh))
        sqsh_mib = round(sqsh.stat().st_size / 2**20, 1)
    return {
        "image": manifest["refs"][0],
        "cold_build_s": round(manifest["build_duration_s"]),
        "cold_build_at": manifest["built_at"],
        "cached_rebuild_s": rebuild_s,
        "cached_rebuild_same_image": rebuilt["image_id"] == manifest["image_id"],
        "image_mib": round(manifest["size_bytes"] / 2**20),
        "squashfs_export_s": export_s,
        "squashfs_mib": sqsh_mib,
        "horovod_wheels_cached_mib": [round(w.stat().st_size / 2**20, 1) for w in wheels],
        "load_avg_1min_at_start": round(load, 2),
    }


def main(variants: list[str]) -> None:
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
        "variants": {v: measure(v) for v in variants},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:] or ["pytorch-cpu"])
