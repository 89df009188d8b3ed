"""Benchmark the GPU and KNL images beside the CPU ones: cold and warm build time, download
volume, runtime image size against its builder stage.

Run as root after cold builds (empty layer, wheel and download caches) of the variants, each
into OUT/RECIPE/VARIANT (`stackbuild build RECIPE -V VARIANT -o OUT/RECIPE`):
    .venv/bin/python benchmarks/accel_build.py --out OUT gpu/pytorch-gpu knl/pytorch-knl \\
        cpu/pytorch-cpu
- cold_build_s: the manifest's build_duration_s (that cold build);
- download_mb: what pip downloaded during that build, summed from its log ("Downloading
  NAME (SIZE)"); the second stage installs from the build cache and downloads nothing;
- warm_rebuild_s: the same variant built again now (every layer cached);
- runtime_over_builder: the runtime image against its builder stage (built with --target
  builder from the layer cache), the issue's goal being <= 0.6.
Writes benchmarks/results/accel_build.json; variants not named keep their numbers. The
machine is shared, so the load average is recorded next to the times.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_build import BUILDER, ROOT, now, podman_builder_stage, run

from stackbuild.build.images import inspect_image

RESULTS = ROOT / "benchmarks" / "results" / "accel_build.json"
UNITS = {"kB": 1e-3, "MB": 1.0, "GB": 1e3}
DOWNLOAD = re.compile(r"Downloading \S+ \((?P<size>[0-9.]+) (?P<unit>kB|MB|GB)\)")


def download_mb(log: Path) -> float:
    """Megabytes pip downloaded during the build that wrote this log."""
    total = 0.0
    for match in DOWNLOAD.finditer(log.read_text(encoding="utf-8", errors="replace")):
        total += float(match["size"]) * UNITS[match["unit"]]
    return round(total, 1)


def measure(out: Path, item: str) -> dict[str, Any]:
    """The numbers of one RECIPE/VARIANT, built cold into OUT/RECIPE/VARIANT."""
    recipe, variant = item.split("/", 1)
    folder = out / recipe / variant
    manifest = json.loads((folder / "manifest.json").read_text())
    logs = sorted((folder / "logs").glob("build-*.log"))
    numbers: dict[str, Any] = {
        "image": manifest["refs"][0],
        "cold_build_s": round(manifest["build_duration_s"]),
        "cold_build_at": manifest["built_at"],
        "download_mb": download_mb(logs[0]) if logs else None,
        "image_mib": round(manifest["size_bytes"] / 2**20),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
    }
    numbers["warm_rebuild_s"] = run("build", recipe, "-V", variant, "-o", str(out / recipe))
    rebuilt = json.loads((folder / "manifest.json").read_text())
    numbers["warm_rebuild_same_image"] = rebuilt["image_id"] == manifest["image_id"]
    podman_builder_stage(folder)
    builder = inspect_image(BUILDER).size
    numbers["builder_mib"] = round(builder / 2**20)
    numbers["runtime_over_builder"] = round(manifest["size_bytes"] / builder, 3)
    subprocess.run(["podman", "rmi", BUILDER], capture_output=True, check=False)
    return numbers | {"measured_at": now()}


def main(args: list[str]) -> None:
    out = Path(args[args.index("--out") + 1]) if "--out" in args else ROOT / "out"
    items = [a for a in args if "/" in a and not a.startswith("--") and a != str(out)]
    earlier = json.loads(RESULTS.read_text())["variants"] if RESULTS.exists() else {}
    fresh = {item: measure(out, item) for item in items}
    results = {"when": now(), "machine": f"{os.cpu_count()} cpus", "variants": earlier | fresh}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
